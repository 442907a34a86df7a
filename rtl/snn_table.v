`timescale 1ns / 1ps
`default_nettype none

/*
 * The sub-bit engine's shared Dot9 units and their table. DOT9 units dot
 * the patch of one input channel with DOT9 codebook kernels per step
 * (entries step*DOT9 + u); after 2^TAU / DOT9 steps the table holds all
 * 2^TAU dots of the patch, and lane l reads table[idx_l] instead of
 * running a Dot9 of its own. Two halves: one is written while the other
 * is read (the double buffer, see layer_seq.v for its timing).
 *
 * TABLE_RAM = 0: the table is registers (each entry written by one fixed
 *   unit) and every lane reads it through a 2^(TAU+1):1 multiplexer;
 *   val is valid in the cycle of lv.
 * TABLE_RAM = 1: every lane keeps its own copy in an inferred RAM, written
 *   by broadcast (one word of DOT9 entries per step) and read with a
 *   registered port (address = {half, step}; the entry within the word is
 *   selected after the read); val is valid the cycle after lv. A half is
 *   written only while the lanes read the other one, never in the same
 *   cycle as a read of it.
 */
module snn_table #
(
    // codebook index bits (2^TAU kernels)
    parameter TAU = 2,
    // Dot9 units (a power of two, at most 2^TAU)
    parameter DOT9 = 2,
    // lanes
    parameter LANES = 4,
    // activation bits
    parameter A = 1,
    // width of a Dot9 count
    parameter P_W = 4,
    // 0: register table, 1: per-lane RAM tables
    parameter TABLE_RAM = 0,
    // width of dstep (covers 2^TAU / DOT9 - 1)
    parameter STEP_W = 1
)
(
    input  wire                  clk,
    input  wire                  en,

    // Dot9 step dstep into half dhalf with these codebook kernels
    input  wire                  dv,
    input  wire [STEP_W-1:0]     dstep,
    input  wire                  dhalf,
    input  wire [9*A-1:0]        patch,
    input  wire [8:0]            mask,
    input  wire [DOT9*9-1:0]     codes,

    // lane reads: lane l reads entry idx[l*TAU +: TAU] of half lhalf
    input  wire                  lv,
    input  wire                  lhalf,
    input  wire [LANES*TAU-1:0]  idx,
    output wire [LANES*P_W-1:0]  val
);

localparam NK = 1 << TAU;
localparam STEPS = NK / DOT9;
localparam DB = $clog2(DOT9);

initial begin
    if (DOT9 < 1 || DOT9 > NK || (1 << DB) != DOT9) begin
        $error("snn_table: DOT9 = %0d must be a power of two <= 2^TAU = %0d (instance %m)", DOT9, NK);
        $finish;
    end
end

wire [DOT9*P_W-1:0] p;

genvar u, l;
generate
    for (u = 0; u < DOT9; u = u + 1) begin : unit
        dot9 #(.A(A), .P_W(P_W)) dot (.a(patch), .k(codes[u*9 +: 9]), .mask(mask), .p(p[u*P_W +: P_W]));
    end
endgenerate

generate
    if (TABLE_RAM == 0) begin : regs
        reg [2*NK*P_W-1:0] tbl;
        integer h, e;
        always @(posedge clk) begin
            for (h = 0; h < 2; h = h + 1) begin
                for (e = 0; e < NK; e = e + 1) begin
                    if (en && dv && dhalf == h[0] && {{(32-STEP_W){1'b0}}, dstep} == e / DOT9) begin
                        tbl[(h*NK + e)*P_W +: P_W] <= p[(e % DOT9)*P_W +: P_W];
                    end
                end
            end
        end
        for (l = 0; l < LANES; l = l + 1) begin : lane
            assign val[l*P_W +: P_W] = tbl[{lhalf, idx[l*TAU +: TAU]}*P_W +: P_W];
        end
        // reads are combinational: no read enable
        /* verilator lint_off UNUSEDSIGNAL */
        wire unused = lv;
        /* verilator lint_on UNUSEDSIGNAL */
    end else begin : rams
        localparam AW = $clog2(2 * STEPS);
        wire [AW-1:0] waddr = dhalf ? STEPS[AW-1:0] + {{(AW-STEP_W){1'b0}}, dstep}
                                    : {{(AW-STEP_W){1'b0}}, dstep};
        for (l = 0; l < LANES; l = l + 1) begin : lane
            wire [TAU-1:0]      i = idx[l*TAU +: TAU];
            wire [DOT9*P_W-1:0] q;
            wire [AW-1:0]       raddr;
            if (STEPS == 1) begin : one
                assign raddr = lhalf;
            end else begin : many
                assign raddr = lhalf ? STEPS[AW-1:0] + {{(AW-TAU+DB){1'b0}}, i[TAU-1:DB]}
                                     : {{(AW-TAU+DB){1'b0}}, i[TAU-1:DB]};
            end
            ram_sdp #(.SLICE_W(DOT9*P_W), .SLICES(1), .DEPTH(2*STEPS), .ADDR_W(AW)) ram (
                .clk(clk),
                .wen(en && dv), .waddr(waddr), .wdata(p),
                .re(en && lv), .raddr(raddr), .rdata(q)
            );
            if (DOT9 == 1) begin : whole
                assign val[l*P_W +: P_W] = q;
            end else begin : pick
                reg [DB-1:0] lo;
                always @(posedge clk) begin
                    if (en && lv) begin
                        lo <= i[DB-1:0];
                    end
                end
                assign val[l*P_W +: P_W] = q[lo*P_W +: P_W];
            end
        end
    end
endgenerate

endmodule

`default_nettype wire
