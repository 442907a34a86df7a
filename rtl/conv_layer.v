`timescale 1ns / 1ps
`default_nettype none

/*
 * One binary 3x3 conv layer (padding 1, stride 1 or 2) as a streaming
 * engine: activations in, sums or threshold bits out, both AXI-Stream
 * style with back-pressure; images back to back.
 *
 * ENGINE 0, BNN: LANES lanes, each with K = DOT9 / LANES Dot9 units on its
 *   own output channel's kernels (K input channels per cycle), kernels
 *   from a ROM of LANES*K 9-bit codes per word.
 * ENGINE 1, sub-bit: DOT9 shared Dot9 units compute the dots of one input
 *   channel's patch with all 2^TAU codebook kernels into a double-buffered
 *   table; LANES lanes read table[idx[o, i]] (snn_table.v; TABLE_RAM picks
 *   registers or per-lane RAM), indices from a ROM of LANES*TAU bits per
 *   word.
 * ENGINE 2, decompress: as BNN, but the ROM holds the sub-bit indices and
 *   every Dot9 unit decodes its kernel from the codebook itself.
 *
 * Activations are A-bit codes u standing for 2u - (2^A - 1) (A = 1: the
 * +-1 of a binary network; see dot9.v). Sums are the exact integer conv
 * sum_{i,taps} w * value; the threshold bit of channel o is
 * flip ? sum <= thr : sum >= thr.
 *
 * Memory files ($readmemh, written by minisnn/rtlmodel.py):
 *   WEIGHT_FILE    NG*GROUPS words, address g*GROUPS + j (input-channel
 *                  group g, lane group j); lane l, channel k of the group
 *                  in bits [(l*K + k)*B +: B], B = 9 (BNN) or TAU
 *   CODEBOOK_FILE  sub-bit: 2^TAU/DOT9 words, step s: unit u's kernel code
 *                  in bits [u*9 +: 9]; decompress: 2^TAU 9-bit words
 *   THRESH_FILE    GROUPS words, lane l in bits [l*(SUM_W+1) +: SUM_W+1] =
 *                  {flip, flip ? ~thr : thr}
 */
module conv_layer #
(
    // 0: BNN, 1: sub-bit (shared Dot9 table), 2: decompress
    parameter ENGINE = 1,
    // input channels
    parameter C_IN = 4,
    // output channels
    parameter C_OUT = 8,
    // input height
    parameter H = 4,
    // input width
    parameter W = 4,
    // stride (1 or 2)
    parameter STRIDE = 1,
    // activation bits
    parameter A = 1,
    // codebook index bits (sub-bit and decompress)
    parameter TAU = 2,
    // output-channel lanes
    parameter LANES = 4,
    // Dot9 units (BNN, decompress: a multiple of LANES; sub-bit: a power of two <= 2^TAU)
    parameter DOT9 = 2,
    // sub-bit table: 0 registers, 1 per-lane RAM
    parameter TABLE_RAM = 0,
    // 1: threshold bits from THRESH_FILE; 0: none (bits 0)
    parameter HAS_THRESH = 1,
    // 1: beats of LANES {bit, sum}; 0: beats of C_OUT threshold bits
    parameter OUT_SUMS = 1,
    // weight ROM file
    parameter WEIGHT_FILE = "layer.weight.hex",
    // codebook ROM file (sub-bit, decompress)
    parameter CODEBOOK_FILE = "layer.codebook.hex",
    // threshold ROM file
    parameter THRESH_FILE = "layer.thresh.hex"
)
(
    input  wire                clk,
    input  wire                rst,

    // one pixel per beat, channel c in bits [c*A +: A]; tlast on the image's last pixel
    input  wire [C_IN*A-1:0]   s_tdata,
    input  wire                s_tvalid,
    output wire                s_tready,
    input  wire                s_tlast,

    output wire [(OUT_SUMS != 0 ? LANES*($clog2(9*((1<<A)-1)*C_IN+2)+2) : C_OUT)-1:0] m_tdata,
    output wire                m_tvalid,
    input  wire                m_tready,
    output wire                m_tlast,

    // sticky: s_tlast disagreed with H, W
    output wire                err
);

localparam SNN = ENGINE == 1 ? 1 : 0;
localparam K = SNN != 0 || DOT9 < LANES ? 1 : DOT9 / LANES;
localparam NG = (C_IN + K - 1) / K;
localparam GROUPS = (C_OUT + LANES - 1) / LANES;
localparam M = (1 << A) - 1;
localparam P_W = $clog2(9 * M + 1);
// a lane adds K counts a cycle, of which at most C_IN are real channels
localparam VAL_W = $clog2(9 * M * (K < C_IN ? K : C_IN) + 1);
localparam SUM_W = $clog2(9 * M * C_IN + 2) + 1;
localparam STEPS = SNN != 0 && DOT9 <= (1 << TAU) ? (1 << TAU) / DOT9 : 1;
localparam STEP_W = STEPS > 1 ? $clog2(STEPS) : 1;
localparam GRP_W = GROUPS > 1 ? $clog2(GROUPS) : 1;
localparam WN = NG * GROUPS;
localparam WA_W = WN > 1 ? $clog2(WN) : 1;
localparam WORD = ENGINE == 0 ? LANES * K * 9 : LANES * K * TAU;
localparam OUT_W = OUT_SUMS != 0 ? LANES * (SUM_W + 1) : C_OUT;

initial begin
    if (ENGINE < 0 || ENGINE > 2) begin
        $error("conv_layer: ENGINE must be 0 (BNN), 1 (sub-bit) or 2 (decompress), found %0d (instance %m)", ENGINE);
        $finish;
    end
    if (A < 1 || A > 8 || LANES < 1 || DOT9 < 1 || C_OUT < 1) begin
        $error("conv_layer: A in 1..8, LANES, DOT9, C_OUT >= 1 expected (instance %m)");
        $finish;
    end
    if (ENGINE != 0 && (TAU < 1 || TAU > 9)) begin
        $error("conv_layer: TAU must lie in 1..9, found %0d (instance %m)", TAU);
        $finish;
    end
    if (SNN == 0 && DOT9 % LANES != 0) begin
        $error("conv_layer: DOT9 = %0d must be a multiple of LANES = %0d (instance %m)", DOT9, LANES);
        $finish;
    end
end

wire en;

// line buffer and sequencer
wire             ready;
wire             peek_last;
wire             rd;
wire [9*K*A-1:0] patch;
wire [8:0]       mask;
wire [K-1:0]     chmask;
wire             it_first;
wire             it_last;
wire             it_tlast;
wire [3:0]       it_ntaps;

line_buffer #(.C_IN(C_IN), .A(A), .K(K), .H(H), .W(W), .STRIDE(STRIDE)) lb (
    .clk(clk), .rst(rst),
    .s_tdata(s_tdata), .s_tvalid(s_tvalid), .s_tready(s_tready), .s_tlast(s_tlast), .err(err),
    .en(en), .ready(ready), .peek_last(peek_last), .rd(rd),
    .patch(patch), .mask(mask), .chmask(chmask),
    .first(it_first), .last(it_last), .tlast(it_tlast), .ntaps(it_ntaps)
);

wire              dot_v;
wire [STEP_W-1:0] dot_step;
wire              dot_half;
wire              lane_v;
wire [GRP_W-1:0]  lane_grp;
wire [WA_W-1:0]   waddr;
wire              lane_half;
wire              lane_start;

layer_seq #(
    .SNN(SNN), .STEPS(STEPS), .GROUPS(GROUPS), .NG(NG),
    .STEP_W(STEP_W), .GRP_W(GRP_W), .WA_W(WA_W)
) seq (
    .clk(clk), .rst(rst), .en(en),
    .ready(ready), .peek_last(peek_last), .rd(rd),
    .dot_v(dot_v), .dot_step(dot_step), .dot_half(dot_half),
    .lane_v(lane_v), .lane_grp(lane_grp), .waddr(waddr), .lane_half(lane_half),
    .lane_start(lane_start)
);

// one wide weight word per lane issue: the ROM's registered read, then a
// register on the word, as the patch arrives two cycles after its read
wire [WORD-1:0] wq;

rom #(.WIDTH(WORD), .DEPTH(WN), .ADDR_W(WA_W), .INIT_FILE(WEIGHT_FILE))
weights (.clk(clk), .re(lane_v), .addr(waddr), .q(wq));

reg [WORD-1:0]  wq_q;
reg             lv1;
reg             lv2;
reg [GRP_W-1:0] lgrp1;
reg [GRP_W-1:0] lgrp2;
reg             lhalf1;
reg             lhalf2;

always @(posedge clk) begin
    if (en) begin
        lv1 <= lane_v;
        lgrp1 <= lane_grp;
        lhalf1 <= lane_half;
        lv2 <= lv1;
        lgrp2 <= lgrp1;
        lhalf2 <= lhalf1;
        wq_q <= wq;
    end
    if (rst) begin
        lv1 <= 1'b0;
        lv2 <= 1'b0;
    end
end

// what the lanes accumulate, and when
wire                   acc_v;
wire [GRP_W-1:0]       acc_grp;
wire                   acc_first;
wire                   acc_last;
wire                   acc_tlast;
wire [3:0]             acc_ntaps;
wire [LANES*VAL_W-1:0] acc_val;

generate
    if (SNN == 0) begin : direct
        wire [LANES*K*9-1:0] codes;
        if (ENGINE == 0) begin : bnn
            assign codes = wq_q;
        end else begin : dec
            cb_decode #(.TAU(TAU), .PORTS(LANES*K), .INIT_FILE(CODEBOOK_FILE)) decode (.idx(wq_q), .codes(codes));
        end
        lane_dots #(.LANES(LANES), .K(K), .A(A), .P_W(P_W), .VAL_W(VAL_W)) dots (
            .patch(patch), .mask(mask), .chmask(chmask), .codes(codes), .val(acc_val)
        );
        // group j of an item read in cycle e executes in cycle e+j+2, while
        // line_buffer shows that item (cycles e+2 .. two after the next read)
        assign acc_v = lv2;
        assign acc_grp = lgrp2;
        assign acc_first = it_first;
        assign acc_last = it_last;
        assign acc_tlast = it_tlast;
        assign acc_ntaps = it_ntaps;
        // the BNN engine has no Dot9 phase and no table halves
        /* verilator lint_off UNUSEDSIGNAL */
        wire unused = dot_v ^ ^dot_step ^ dot_half ^ lhalf2 ^ lane_start;
        /* verilator lint_on UNUSEDSIGNAL */
    end else begin : subbit
        // Dot9 issue -> execute two cycles later, with the patch: the codebook
        // ROM's registered read, then a register on its word
        wire [DOT9*9-1:0] cbq;
        reg [DOT9*9-1:0]  cbq_q;
        reg               dv1;
        reg               dv2;
        reg [STEP_W-1:0]  dstep1;
        reg [STEP_W-1:0]  dstep2;
        reg               dhalf1;
        reg               dhalf2;
        rom #(.WIDTH(DOT9*9), .DEPTH(STEPS), .ADDR_W(STEP_W), .INIT_FILE(CODEBOOK_FILE))
        codebook (.clk(clk), .re(dot_v), .addr(dot_step), .q(cbq));
        // the lanes' item is the previous Dot9 stage's: line_buffer shows it
        // until the cycle after the lane stage starts, when it is copied
        reg       start_q;
        reg       lf_first;
        reg       lf_last;
        reg       lf_tlast;
        reg [3:0] lf_ntaps;
        always @(posedge clk) begin
            if (en) begin
                dv1 <= dot_v;
                dstep1 <= dot_step;
                dhalf1 <= dot_half;
                dv2 <= dv1;
                dstep2 <= dstep1;
                dhalf2 <= dhalf1;
                cbq_q <= cbq;
                start_q <= lane_start;
                if (start_q) begin
                    lf_first <= it_first;
                    lf_last <= it_last;
                    lf_tlast <= it_tlast;
                    lf_ntaps <= it_ntaps;
                end
            end
            if (rst) begin
                dv1 <= 1'b0;
                dv2 <= 1'b0;
                start_q <= 1'b0;
            end
        end
        wire [LANES*P_W-1:0] tval;
        snn_table #(
            .TAU(TAU), .DOT9(DOT9), .LANES(LANES), .A(A), .P_W(P_W),
            .TABLE_RAM(TABLE_RAM), .STEP_W(STEP_W)
        ) table_ (
            .clk(clk), .en(en),
            .dv(dv2), .dstep(dstep2), .dhalf(dhalf2), .patch(patch), .mask(mask), .codes(cbq_q),
            .lv(lv2), .lhalf(lhalf2), .idx(wq_q), .val(tval)
        );
        assign acc_val = tval;
        if (TABLE_RAM == 0) begin : reg_table
            assign acc_v = lv2;
            assign acc_grp = lgrp2;
            assign acc_first = lf_first;
            assign acc_last = lf_last;
            assign acc_tlast = lf_tlast;
            assign acc_ntaps = lf_ntaps;
        end else begin : ram_table
            // one more cycle: the table RAM's registered read
            reg             lv3;
            reg [GRP_W-1:0] lgrp3;
            reg             f3_first;
            reg             f3_last;
            reg             f3_tlast;
            reg [3:0]       f3_ntaps;
            always @(posedge clk) begin
                if (en) begin
                    lv3 <= lv2;
                    lgrp3 <= lgrp2;
                    f3_first <= lf_first;
                    f3_last <= lf_last;
                    f3_tlast <= lf_tlast;
                    f3_ntaps <= lf_ntaps;
                end
                if (rst) begin
                    lv3 <= 1'b0;
                end
            end
            assign acc_v = lv3;
            assign acc_grp = lgrp3;
            assign acc_first = f3_first;
            assign acc_last = f3_last;
            assign acc_tlast = f3_tlast;
            assign acc_ntaps = f3_ntaps;
        end
        // K = 1: every channel of a group exists
        /* verilator lint_off UNUSEDSIGNAL */
        wire unused = ^chmask;
        /* verilator lint_on UNUSEDSIGNAL */
    end
endgenerate

// one pipeline register on every lane's value, so the Dot9 / table read and
// the accumulation are separate timing paths (lane_acc reads its RAM one cycle
// ahead, at the cycle the value is registered)
reg                   v_q;
reg [GRP_W-1:0]       grp_q;
reg                   first_q;
reg                   last_q;
reg                   tlast_q;
reg [3:0]             ntaps_q;
reg [LANES*VAL_W-1:0] val_q;

always @(posedge clk) begin
    if (en) begin
        v_q <= acc_v;
        grp_q <= acc_grp;
        first_q <= acc_first;
        last_q <= acc_last;
        tlast_q <= acc_tlast;
        ntaps_q <= acc_ntaps;
        val_q <= acc_val;
    end
    if (rst) begin
        v_q <= 1'b0;
    end
end

wire                   ov;
wire [LANES*SUM_W-1:0] osums;
wire [LANES-1:0]       obits;
wire                   otlast;

lane_acc #(
    .LANES(LANES), .GROUPS(GROUPS), .GRP_W(GRP_W), .VAL_W(VAL_W), .SUM_W(SUM_W),
    .CM(C_IN * M), .HAS_THRESH(HAS_THRESH), .THRESH_FILE(THRESH_FILE)
) lanes (
    .clk(clk), .rst(rst), .en(en),
    .rd_v(acc_v), .rd_grp(acc_grp),
    .v(v_q), .grp(grp_q), .first(first_q), .last(last_q), .tlast(tlast_q),
    .ntaps(ntaps_q), .val(val_q),
    .ov(ov), .osums(osums), .obits(obits), .otlast(otlast)
);

out_pack #(
    .OUT_SUMS(OUT_SUMS), .LANES(LANES), .GROUPS(GROUPS), .C_OUT(C_OUT), .SUM_W(SUM_W), .DW(OUT_W)
) out (
    .clk(clk), .rst(rst), .en(en),
    .ov(ov), .osums(osums), .obits(obits), .otlast(otlast),
    .m_tdata(m_tdata), .m_tvalid(m_tvalid), .m_tready(m_tready), .m_tlast(m_tlast)
);

endmodule

`default_nettype wire
