`timescale 1ns / 1ps
`default_nettype none

/*
 * Testbench of conv_layer (one layer, or with CHAIN = 1 layer 1's threshold
 * bits streamed straight into a second layer), run by minisnn/rtlsim.py in
 * a directory holding the memory files l1.*.hex (l2.*.hex) and the input
 * beats in.hex (IMAGES images back to back).
 *
 * Plusargs: +seed=S, +pin=P (percent of cycles the input withholds a beat),
 * +pout=P (percent of cycles tready is low), +max_cycles=N, +tlast_every=N
 * (input tlast every N beats instead of H*W, to test the engine's check).
 * Writes out.txt:
 *   B <tlast> <tdata as hex>   every output beat, in order
 *   C <cycles>                 first input handshake .. last output handshake
 *   X <n>   cycles with x/z on an output (tdata counts only with tvalid)
 *   V <n>   output beats changed or dropped while stalled (AXI-Stream rule)
 *   E <err> the engine's tlast check; T <1 if max_cycles ran out>
 */
module tb_layer #
(
    // layer 1 (see conv_layer.v)
    parameter ENGINE = 1,
    parameter C_IN = 4,
    parameter C_OUT = 8,
    parameter H = 4,
    parameter W = 4,
    parameter STRIDE = 1,
    parameter A = 1,
    parameter TAU = 2,
    parameter LANES = 4,
    parameter DOT9 = 2,
    parameter TABLE_RAM = 0,
    parameter HAS_THRESH = 1,
    parameter OUT_SUMS = 1,
    // images streamed back to back
    parameter IMAGES = 2,
    // 1: a second layer (C_IN = C_OUT, A = 1) takes layer 1's bits
    parameter CHAIN = 0,
    // layer 2 (with CHAIN = 1)
    parameter L2_ENGINE = 1,
    parameter L2_C_OUT = 4,
    parameter L2_STRIDE = 1,
    parameter L2_TAU = 2,
    parameter L2_LANES = 2,
    parameter L2_DOT9 = 2,
    parameter L2_TABLE_RAM = 0,
    parameter L2_HAS_THRESH = 0,
    parameter L2_OUT_SUMS = 1
)
();

localparam DW1 = OUT_SUMS != 0 ? LANES * ($clog2(9 * ((1 << A) - 1) * C_IN + 2) + 2) : C_OUT;
localparam DW2 = L2_OUT_SUMS != 0 ? L2_LANES * ($clog2(9 * C_OUT + 2) + 2) : L2_C_OUT;
localparam DWO = CHAIN != 0 ? DW2 : DW1;
localparam BEATS = IMAGES * H * W;

reg clk = 1'b0;
reg rst = 1'b1;

reg  [C_IN*A-1:0] in_data;
reg               in_valid = 1'b0;
reg               in_last;
wire              in_ready;
reg               out_ready = 1'b0;
wire [DWO-1:0]    out_data;
wire              out_valid;
wire              out_last;
wire              err1;
wire              err2;

wire [DW1-1:0]    m1_data;
wire              m1_valid;
wire              m1_last;
wire              m1_ready;

conv_layer #(
    .ENGINE(ENGINE), .C_IN(C_IN), .C_OUT(C_OUT), .H(H), .W(W), .STRIDE(STRIDE), .A(A),
    .TAU(TAU), .LANES(LANES), .DOT9(DOT9), .TABLE_RAM(TABLE_RAM), .HAS_THRESH(HAS_THRESH),
    .OUT_SUMS(OUT_SUMS), .WEIGHT_FILE("l1.weight.hex"), .CODEBOOK_FILE("l1.codebook.hex"),
    .THRESH_FILE("l1.thresh.hex")
) l1 (
    .clk(clk), .rst(rst),
    .s_tdata(in_data), .s_tvalid(in_valid), .s_tready(in_ready), .s_tlast(in_last),
    .m_tdata(m1_data), .m_tvalid(m1_valid), .m_tready(m1_ready), .m_tlast(m1_last),
    .err(err1)
);

generate
    if (CHAIN != 0) begin : chain
        conv_layer #(
            .ENGINE(L2_ENGINE), .C_IN(C_OUT), .C_OUT(L2_C_OUT), .H((H - 1) / STRIDE + 1),
            .W((W - 1) / STRIDE + 1), .STRIDE(L2_STRIDE), .A(1), .TAU(L2_TAU), .LANES(L2_LANES),
            .DOT9(L2_DOT9), .TABLE_RAM(L2_TABLE_RAM), .HAS_THRESH(L2_HAS_THRESH),
            .OUT_SUMS(L2_OUT_SUMS), .WEIGHT_FILE("l2.weight.hex"),
            .CODEBOOK_FILE("l2.codebook.hex"), .THRESH_FILE("l2.thresh.hex")
        ) l2 (
            .clk(clk), .rst(rst),
            .s_tdata(m1_data[C_OUT-1:0]), .s_tvalid(m1_valid), .s_tready(m1_ready), .s_tlast(m1_last),
            .m_tdata(out_data), .m_tvalid(out_valid), .m_tready(out_ready), .m_tlast(out_last),
            .err(err2)
        );
    end else begin : single
        assign out_data = m1_data;
        assign out_valid = m1_valid;
        assign out_last = m1_last;
        assign m1_ready = out_ready;
        assign err2 = 1'b0;
    end
endgenerate

always #5 clk = ~clk;

reg [C_IN*A-1:0] stim [0:BEATS-1];

integer fd;
integer seed;
integer pin;
integer pout;
integer max_cycles;
integer tlast_every;
integer cyc = 0;
integer sent = 0;
integer images_out = 0;
integer first_in = -1;
integer last_out = -1;
integer x_count = 0;
integer violations = 0;
integer tail = 0;
reg     stalled = 1'b0;
reg     in_fire = 1'b0;
reg [DWO:0] held;

initial begin
    if (!$value$plusargs("seed=%d", seed)) seed = 1;
    if (!$value$plusargs("pin=%d", pin)) pin = 0;
    if (!$value$plusargs("pout=%d", pout)) pout = 0;
    if (!$value$plusargs("max_cycles=%d", max_cycles)) max_cycles = 100000000;
    if (!$value$plusargs("tlast_every=%d", tlast_every)) tlast_every = H * W;
    $readmemh("in.hex", stim);
    fd = $fopen("out.txt", "w");
    repeat (3) @(posedge clk);
    #1 rst = 1'b0;
    in_last = 1'b0;
    // a few cycles after the last image: no beat may follow
    while (tail < 8 && cyc < max_cycles) begin
        @(negedge clk);
        if ((^{in_ready, out_valid, out_last, err1, err2}) === 1'bx
                || (out_valid === 1'b1 && (^out_data) === 1'bx)) begin
            x_count = x_count + 1;
        end
        if (stalled && (out_valid !== 1'b1 || {out_last, out_data} !== held)) begin
            violations = violations + 1;
        end
        stalled = out_valid === 1'b1 && !out_ready;
        held = {out_last, out_data};
        in_fire = in_valid && in_ready;
        if (in_fire && first_in < 0) first_in = cyc;
        if (out_valid && out_ready) begin
            $fwrite(fd, "B %0d %h\n", out_last, out_data);
            last_out = cyc;
            if (out_last) images_out = images_out + 1;
        end
        if (images_out == IMAGES) tail = tail + 1;
        @(posedge clk);
        #1 cyc = cyc + 1;
        if (in_fire) begin
            sent = sent + 1;
            in_valid = 1'b0;
        end
        if (!in_valid && sent < BEATS && ($random(seed) & 32'h7fffffff) % 100 >= pin) begin
            in_valid = 1'b1;
            in_data = stim[sent];
            in_last = (sent % tlast_every) == tlast_every - 1;
        end
        out_ready = ($random(seed) & 32'h7fffffff) % 100 >= pout;
    end
    $fwrite(fd, "C %0d\nX %0d\nV %0d\nE %0d\nT %0d\n", last_out - first_in + 1, x_count, violations,
            err1 | err2, cyc >= max_cycles);
    $fclose(fd);
    $finish;
end

endmodule

`default_nettype wire
