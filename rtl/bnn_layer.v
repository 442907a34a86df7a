`timescale 1ns / 1ps
`default_nettype none

/*
 * Binary (BNN) 3x3 conv layer engine, the baseline for snn_layer with the
 * same interface: per output position and input channel, LANES lanes each
 * dot the 3x3 patch with their own output channel's kernel (one Dot9 per
 * lane) for LANES output channels per cycle (GROUPS cycles) and
 * accumulate. Sums leave on out_* (one group per out_valid cycle,
 * sign-extended to 32 bits per lane) with their threshold bits.
 *
 * Memories ($readmemh files, see minisnn/export.py and manifest.json):
 *   activations  H*W words of C_IN bits, address y*W + x, bit c = channel c
 *   kernels      C_IN*C_OUT words of 9 bits (kernel codes), address i*C_OUT + o
 *   thresholds   C_OUT words of 32 bits, flips C_OUT words of 1 bit
 */
module bnn_layer #
(
    // input channels
    parameter C_IN = 4,
    // output channels
    parameter C_OUT = 8,
    // input height
    parameter H = 4,
    // input width
    parameter W = 4,
    // stride (1 or 2), padding 1
    parameter STRIDE = 1,
    // output-channel lanes
    parameter LANES = 4,
    // 1: threshold/flip memories exist; 0: thresholds are 0, flips 0
    parameter HAS_THRESH = 1,
    // activation memory file
    parameter ACT_FILE = "act.hex",
    // kernel memory file
    parameter KERNEL_FILE = "layer.kernel.hex",
    // threshold memory file
    parameter THRESH_FILE = "layer.threshold.hex",
    // flip memory file
    parameter FLIP_FILE = "layer.flip.hex"
)
(
    input  wire                clk,
    input  wire                rst,

    input  wire                start,
    output wire                busy,
    output wire                done,
    output wire [31:0]         cycles,

    output wire                out_valid,
    output wire [31:0]         out_pos,
    output wire [31:0]         out_grp,
    output wire [LANES*32-1:0] out_sums,
    output wire [LANES-1:0]    out_bits
);

localparam HO = (H - 1) / STRIDE + 1;
localparam WO = (W - 1) / STRIDE + 1;
localparam GROUPS = (C_OUT + LANES - 1) / LANES;
// |sum| <= 9*C_IN, plus a sign bit; at least 6 bits to hold a Dot9 result
localparam SUM_W = C_IN > 1 ? $clog2(9 * C_IN + 1) + 1 : 6;
localparam THR_W = 32;
localparam ACT_AW = H * W > 1 ? $clog2(H * W) : 1;
localparam KERN_AW = C_IN * C_OUT > 1 ? $clog2(C_IN * C_OUT) : 1;
localparam O_AW = C_OUT > 1 ? $clog2(C_OUT) : 1;
localparam Y_W = $clog2(H + STRIDE);
localparam X_W = $clog2(W + STRIDE);
localparam CH_W = C_IN > 1 ? $clog2(C_IN) : 1;
localparam STEP_W = 1;
localparam GRP_W = GROUPS > 1 ? $clog2(GROUPS) : 1;
localparam POS_W = HO * WO > 1 ? $clog2(HO * WO) : 1;

// sequencer
wire              fetch_v;
wire [1:0]        fetch_col;
wire [Y_W-1:0]    iy;
wire [X_W-1:0]    ix;
// the BNN engine has no Dot9 phase (DOT_STEPS = 0): these issue ports stay idle
/* verilator lint_off UNUSEDSIGNAL */
wire              dot_v;
wire [CH_W-1:0]   dot_ch;
wire [STEP_W-1:0] dot_step;
/* verilator lint_on UNUSEDSIGNAL */
wire              lane_v;
wire [CH_W-1:0]   lane_ch;
wire [GRP_W-1:0]  lane_grp;
wire [POS_W-1:0]  lane_pos;
wire              lane_first;
wire              lane_last;

layer_seq #(
    .C_IN(C_IN), .HO(HO), .WO(WO), .STRIDE(STRIDE),
    .DOT_STEPS(0), .GROUPS(GROUPS),
    .Y_W(Y_W), .X_W(X_W), .CH_W(CH_W), .STEP_W(STEP_W),
    .GRP_W(GRP_W), .POS_W(POS_W), .CYC_W(32)
) seq (
    .clk(clk), .rst(rst),
    .start(start), .busy(busy), .done(done), .cycles(cycles),
    .fetch_v(fetch_v), .fetch_col(fetch_col), .iy(iy), .ix(ix),
    .dot_v(dot_v), .dot_ch(dot_ch), .dot_step(dot_step),
    .lane_v(lane_v), .lane_ch(lane_ch), .lane_grp(lane_grp), .lane_pos(lane_pos),
    .lane_first(lane_first), .lane_last(lane_last)
);

// issue -> execute pipeline registers (one cycle of memory latency)
reg              lane_v_q;
reg [CH_W-1:0]   lane_ch_q;
reg [GRP_W-1:0]  lane_grp_q;
reg [POS_W-1:0]  lane_pos_q;
reg              lane_first_q;
reg              lane_last_q;

always @(posedge clk) begin
    lane_v_q <= lane_v;
    lane_ch_q <= lane_ch;
    lane_grp_q <= lane_grp;
    lane_pos_q <= lane_pos;
    lane_first_q <= lane_first;
    lane_last_q <= lane_last;
    if (rst) begin
        lane_v_q <= 1'b0;
    end
end

// activation window
wire [3*ACT_AW-1:0] act_addr;
wire [3*C_IN-1:0]   act_q;
wire [8:0]          patch;
wire [8:0]          mask;

rom #(.WIDTH(C_IN), .DEPTH(H * W), .ADDR_W(ACT_AW), .PORTS(3), .INIT_FILE(ACT_FILE))
act_mem (.clk(clk), .addr(act_addr), .q(act_q));

act_window #(
    .C_IN(C_IN), .H(H), .W(W), .ADDR_W(ACT_AW), .Y_W(Y_W), .X_W(X_W), .CH_W(CH_W)
) window (
    .clk(clk), .rst(rst),
    .fetch_v(fetch_v), .fetch_col(fetch_col), .iy(iy), .ix(ix),
    .mem_addr(act_addr), .mem_q(act_q),
    .ch(lane_ch_q), .patch(patch), .mask(mask)
);

// lanes: lane l of group grp is output channel grp*LANES + l
reg  [LANES*KERN_AW-1:0] kern_addr;
wire [LANES*9-1:0]      kern_q;
// read by the threshold memories only, so unused when HAS_THRESH = 0
/* verilator lint_off UNUSEDSIGNAL */
reg  [LANES*O_AW-1:0]   o_addr;
/* verilator lint_on UNUSEDSIGNAL */
wire [LANES*5-1:0]      lane_val;

integer l;
// only the low address bits of these integers are used, by design
/* verilator lint_off UNUSEDSIGNAL */
integer o, a;
/* verilator lint_on UNUSEDSIGNAL */

always @* begin
    for (l = 0; l < LANES; l = l + 1) begin
        o = {{(32-GRP_W){1'b0}}, lane_grp} * LANES + l;
        // lanes past C_OUT (last group) read channel 0; their sums are ignored
        if (o >= C_OUT) begin
            o = 0;
        end
        a = {{(32-CH_W){1'b0}}, lane_ch} * C_OUT + o;
        kern_addr[l*KERN_AW +: KERN_AW] = a[KERN_AW-1:0];
        o_addr[l*O_AW +: O_AW] = o[O_AW-1:0];
    end
end

rom #(.WIDTH(9), .DEPTH(C_IN * C_OUT), .ADDR_W(KERN_AW), .PORTS(LANES), .INIT_FILE(KERNEL_FILE))
kern_mem (.clk(clk), .addr(kern_addr), .q(kern_q));

genvar g;
generate
    for (g = 0; g < LANES; g = g + 1) begin : dot_unit
        dot9 unit (.a(patch), .k(kern_q[g*9 +: 9]), .mask(mask), .dot(lane_val[g*5 +: 5]));
    end
endgenerate

wire [LANES*THR_W-1:0] thresh;
wire [LANES-1:0]       flip;

generate
    if (HAS_THRESH != 0) begin : thr
        rom #(.WIDTH(THR_W), .DEPTH(C_OUT), .ADDR_W(O_AW), .PORTS(LANES), .INIT_FILE(THRESH_FILE))
        thr_mem (.clk(clk), .addr(o_addr), .q(thresh));
        rom #(.WIDTH(1), .DEPTH(C_OUT), .ADDR_W(O_AW), .PORTS(LANES), .INIT_FILE(FLIP_FILE))
        flip_mem (.clk(clk), .addr(o_addr), .q(flip));
    end else begin : no_thr
        assign thresh = {LANES*THR_W{1'b0}};
        assign flip = {LANES{1'b0}};
    end
endgenerate

wire [POS_W-1:0]       acc_pos;
wire [GRP_W-1:0]       acc_grp;
wire [LANES*SUM_W-1:0] acc_sums;

lane_acc #(
    .LANES(LANES), .GROUPS(GROUPS), .GRP_W(GRP_W), .POS_W(POS_W),
    .SUM_W(SUM_W), .THR_W(THR_W)
) lanes (
    .clk(clk), .rst(rst),
    .v(lane_v_q), .grp(lane_grp_q), .pos(lane_pos_q),
    .first(lane_first_q), .last(lane_last_q),
    .val(lane_val), .thresh(thresh), .flip(flip),
    .out_valid(out_valid), .out_pos(acc_pos), .out_grp(acc_grp),
    .out_sums(acc_sums), .out_bits(out_bits)
);

assign out_pos = {{(32-POS_W){1'b0}}, acc_pos};
assign out_grp = {{(32-GRP_W){1'b0}}, acc_grp};

generate
    for (g = 0; g < LANES; g = g + 1) begin : sext
        assign out_sums[g*32 +: 32] = {{(32-SUM_W){acc_sums[g*SUM_W+SUM_W-1]}}, acc_sums[g*SUM_W +: SUM_W]};
    end
endgenerate

endmodule

`default_nettype wire
