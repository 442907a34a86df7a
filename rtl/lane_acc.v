`timescale 1ns / 1ps
`default_nettype none

/*
 * LANES output-channel accumulators, shared by the engines. Lane l of
 * group grp is output channel grp*LANES + l.
 *
 * Each valid cycle adds one unsigned count per lane (Dot9 p values, see
 * dot9.v), doubled, to the sums of group grp. The first input-channel group
 * of a position starts from the padding correction instead of the stored
 * sum, so the correction is applied once per position and no clear pass is
 * needed:
 *   sum = -CM * ntaps + 2 * (p_1 + p_2 + ...)      (CM = C_IN * (2^A - 1)).
 * With the last group the sum is registered and, one cycle later, compared
 * with the channel's threshold at the sum's own width (flip ? sum <= thr :
 * sum >= thr; the threshold ROM is read with the last group), then leaves
 * through the output register. The ROM holds {flip, flip ? ~thr : thr}:
 * ~sum >= ~thr is sum <= thr, so one subtraction serves both senses.
 *
 * Sums: one word of LANES sums per group in an inferred RAM with a
 * registered read, issued one cycle ahead (rd_v, rd_grp); a register when
 * GROUPS = 1. A group is read again no earlier than two cycles after its
 * write (the sequencer visits GROUPS >= 2 groups in turn), so the RAM never
 * reads a word in the cycle it is written.
 */
module lane_acc #
(
    // lanes
    parameter LANES = 4,
    // output-channel groups (accumulator words)
    parameter GROUPS = 2,
    // width of a group index
    parameter GRP_W = 1,
    // width of one lane's contribution per cycle
    parameter VAL_W = 4,
    // width of a sum and a threshold (two's complement, holds +-(9 * CM + 1))
    parameter SUM_W = 9,
    // padding correction per valid tap: C_IN * (2^A - 1)
    parameter CM = 4,
    // 1: thresholds from THRESH_FILE; 0: none (bits are 0)
    parameter HAS_THRESH = 1,
    // $readmemh file: GROUPS words of LANES * (SUM_W + 1) bits, {flip, flip ? ~thr : thr}
    parameter THRESH_FILE = "thresh.hex"
)
(
    input  wire                   clk,
    input  wire                   rst,
    input  wire                   en,

    // one cycle ahead of v: the group to read (the read waits while en is low)
    input  wire                   rd_v,
    input  wire [GRP_W-1:0]       rd_grp,

    input  wire                   v,
    input  wire [GRP_W-1:0]       grp,
    input  wire                   first,
    input  wire                   last,
    input  wire                   tlast,
    input  wire [3:0]             ntaps,
    // lane l adds val[l*VAL_W +: VAL_W]
    input  wire [LANES*VAL_W-1:0] val,

    output reg                    ov,
    output reg  [LANES*SUM_W-1:0] osums,
    output reg  [LANES-1:0]       obits,
    // the last group of the image's last position
    output reg                    otlast
);

initial begin
    if (VAL_W + 1 > SUM_W) begin
        $error("lane_acc: SUM_W = %0d must be at least VAL_W + 1 = %0d (instance %m)", SUM_W, VAL_W + 1);
        $finish;
    end
end

wire [LANES*SUM_W-1:0] acc_old;
reg  [LANES*SUM_W-1:0] acc_new;
wire commit = en && v;

generate
    if (GROUPS == 1) begin : acc_reg
        reg [LANES*SUM_W-1:0] acc;
        always @(posedge clk) begin
            if (commit) begin
                acc <= acc_new;
            end
        end
        assign acc_old = acc;
        // a single group needs no read address
        /* verilator lint_off UNUSEDSIGNAL */
        wire unused = rd_v ^ ^rd_grp ^ ^grp;
        /* verilator lint_on UNUSEDSIGNAL */
    end else begin : acc_ram
        ram_sdp #(.SLICE_W(LANES*SUM_W), .SLICES(1), .DEPTH(GROUPS), .ADDR_W(GRP_W)) ram (
            .clk(clk),
            .wen(commit), .waddr(grp), .wdata(acc_new),
            .re(en && rd_v), .raddr(rd_grp), .rdata(acc_old)
        );
    end
endgenerate

wire [LANES*(SUM_W+1)-1:0] thr_q;

generate
    if (HAS_THRESH != 0) begin : thr
        rom #(.WIDTH(LANES*(SUM_W+1)), .DEPTH(GROUPS), .ADDR_W(GRP_W), .INIT_FILE(THRESH_FILE))
        thr_rom (.clk(clk), .re(commit), .addr(grp), .q(thr_q));
    end else begin : no_thr
        assign thr_q = {LANES*(SUM_W+1){1'b0}};
    end
endgenerate

// 32 bits wide: its low SUM_W bits are used
/* verilator lint_off UNUSEDSIGNAL */
wire [31:0] corr = {28'd0, ntaps} * CM;
/* verilator lint_on UNUSEDSIGNAL */
wire [SUM_W-1:0] start = -corr[SUM_W-1:0];

integer l;

always @* begin
    for (l = 0; l < LANES; l = l + 1) begin
        acc_new[l*SUM_W +: SUM_W] = (first ? start : acc_old[l*SUM_W +: SUM_W])
            + {{(SUM_W-VAL_W-1){1'b0}}, val[l*VAL_W +: VAL_W], 1'b0};
    end
end

// compare stage: a finished group's sums, one cycle later, against the
// thresholds read with them
reg                    c_v;
reg [LANES*SUM_W-1:0]  c_sums;
reg                    c_tlast;
reg [SUM_W:0]          diff;
reg [LANES-1:0]        bits;

always @* begin
    for (l = 0; l < LANES; l = l + 1) begin
        // sign of (sum ^ flip) - thr, one bit wider than both
        diff = {c_sums[l*SUM_W + SUM_W - 1] ^ thr_q[l*(SUM_W+1) + SUM_W],
                c_sums[l*SUM_W +: SUM_W] ^ {SUM_W{thr_q[l*(SUM_W+1) + SUM_W]}}}
             - {thr_q[l*(SUM_W+1) + SUM_W - 1], thr_q[l*(SUM_W+1) +: SUM_W]};
        bits[l] = HAS_THRESH != 0 && !diff[SUM_W];
    end
end

always @(posedge clk) begin
    if (en) begin
        c_v <= v && last;
        if (v && last) begin
            c_sums <= acc_new;
            c_tlast <= tlast && {{(32-GRP_W){1'b0}}, grp} == GROUPS - 1;
        end
        ov <= c_v;
        if (c_v) begin
            osums <= c_sums;
            obits <= bits;
            otlast <= c_tlast;
        end
    end
    if (rst) begin
        c_v <= 1'b0;
        ov <= 1'b0;
        osums <= {LANES*SUM_W{1'b0}};
        obits <= {LANES{1'b0}};
        otlast <= 1'b0;
    end
end

endmodule

`default_nettype wire
