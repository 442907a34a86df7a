`timescale 1ns / 1ps
`default_nettype none

/*
 * Testbench for snn_layer (ENGINE = 0) and bnn_layer (ENGINE = 1), run by
 * minisnn/rtlsim.py from a directory holding the memory files. It resets,
 * then starts the engine +runs=N times back to back and writes out.txt:
 *   O <run> <pos> <grp> <sums as %b, LANES x 32 bits> <bits as %b>
 *   C <run> <cycles>
 *   D <done pulses>       (must equal N)
 *   X <cycles with x/z>   (any output x or z after reset; must be 0)
 * Sums are printed with %b so that x/z on them reaches Python too.
 */
module tb_layer #
(
    // 0: snn_layer, 1: bnn_layer
    parameter ENGINE = 0,
    // layer and engine parameters, see snn_layer / bnn_layer
    parameter C_IN = 4,
    parameter C_OUT = 8,
    parameter TAU = 2,
    parameter H = 4,
    parameter W = 4,
    parameter STRIDE = 1,
    parameter LANES = 4,
    parameter P_DOT = 2,
    parameter HAS_THRESH = 1
)
();

reg clk = 1'b0;
reg rst = 1'b1;
reg start = 1'b0;

wire                busy;
wire                done;
wire [31:0]         cycles;
wire                out_valid;
wire [31:0]         out_pos;
wire [31:0]         out_grp;
wire [LANES*32-1:0] out_sums;
wire [LANES-1:0]    out_bits;

generate
    if (ENGINE == 0) begin : eng
        snn_layer #(
            .C_IN(C_IN), .C_OUT(C_OUT), .TAU(TAU), .H(H), .W(W), .STRIDE(STRIDE),
            .LANES(LANES), .P_DOT(P_DOT), .HAS_THRESH(HAS_THRESH),
            .ACT_FILE("act.hex"), .CODEBOOK_FILE("layer.codebook.hex"),
            .IDX_FILE("layer.idx.hex"), .THRESH_FILE("layer.threshold.hex"),
            .FLIP_FILE("layer.flip.hex")
        ) dut (
            .clk(clk), .rst(rst), .start(start), .busy(busy), .done(done), .cycles(cycles),
            .out_valid(out_valid), .out_pos(out_pos), .out_grp(out_grp),
            .out_sums(out_sums), .out_bits(out_bits)
        );
    end else begin : eng
        bnn_layer #(
            .C_IN(C_IN), .C_OUT(C_OUT), .H(H), .W(W), .STRIDE(STRIDE),
            .LANES(LANES), .HAS_THRESH(HAS_THRESH),
            .ACT_FILE("act.hex"), .KERNEL_FILE("layer.kernel.hex"),
            .THRESH_FILE("layer.threshold.hex"), .FLIP_FILE("layer.flip.hex")
        ) dut (
            .clk(clk), .rst(rst), .start(start), .busy(busy), .done(done), .cycles(cycles),
            .out_valid(out_valid), .out_pos(out_pos), .out_grp(out_grp),
            .out_sums(out_sums), .out_bits(out_bits)
        );
    end
endgenerate

always #5 clk = ~clk;

integer fd;
integer runs;
integer run;
integer max_cycles;
integer done_count = 0;
integer x_count = 0;
integer waited;

// every output, every cycle after reset: no x/z
always @(posedge clk) begin
    if (!rst) begin
        if ((^{busy, done, cycles, out_valid, out_pos, out_grp, out_sums, out_bits}) === 1'bx) begin
            x_count = x_count + 1;
        end
        // the run of an output is the number of done pulses before it
        if (out_valid === 1'b1) begin
            $fwrite(fd, "O %0d %0d %0d %b %b\n", done_count, out_pos, out_grp, out_sums, out_bits);
        end
        if (done === 1'b1) begin
            done_count = done_count + 1;
        end
    end
end

initial begin
    if (!$value$plusargs("runs=%d", runs)) begin
        runs = 2;
    end
    if (!$value$plusargs("max_cycles=%d", max_cycles)) begin
        max_cycles = 100000000;
    end
    fd = $fopen("out.txt", "w");
    run = 0;
    repeat (3) @(posedge clk);
    #1 rst = 1'b0;
    for (run = 0; run < runs; run = run + 1) begin
        @(posedge clk);
        #1 start = 1'b1;
        @(posedge clk);
        #1 start = 1'b0;
        waited = 0;
        while (done !== 1'b1 && waited < max_cycles) begin
            @(posedge clk);
            #1 waited = waited + 1;
        end
        $fwrite(fd, "C %0d %0d\n", run, cycles);
    end
    // a few idle cycles: done must not pulse again
    repeat (4) @(posedge clk);
    #1 $fwrite(fd, "D %0d\nX %0d\n", done_count, x_count);
    $fclose(fd);
    $finish;
end

endmodule

`default_nettype wire
