`timescale 1ns / 1ps
`default_nettype none

/*
 * Stage sequencer shared by the engines. Work comes in items (output
 * position, input-channel group), read one per stage from line_buffer.
 *
 * SNN = 0 (BNN, decompress): stage = one item; its GROUPS lane cycles
 *   issue output-channel group c in cycle c.
 * SNN = 1 (sub-bit): stage t issues the STEPS Dot9 steps of item t (table
 *   half t mod 2) while the lanes issue the GROUPS groups of item t-1 from
 *   the other half: the double buffer. It lasts max(STEPS, GROUPS) cycles.
 *   After an image's last item a lanes-only stage drains the pipeline, so
 *   an image's outputs never wait for the next image's input; the next
 *   image starts with a Dot9-only stage.
 *
 * A stage starts (and reads its item) in the first cycle with the item
 * `ready` and no stage running; it issues in that cycle and the next
 * length - 1. Every issued operation executes two cycles later (a
 * registered memory read, then a register on the patch and on the weight
 * or codebook word); the double buffer relies on Dot9 and lane issues
 * having that same delay: the Dot9 step issued in cycle e+q writes its
 * table entries at the end of cycle e+q+2, and lane group j issued in
 * cycle e+j reads the table in cycle e+j+2 (register table) or at the end
 * of it (RAM table). With stage t in cycles e .. e+L-1 (L >= STEPS,
 * L >= GROUPS), item t's last write (end of e+STEPS+1) precedes its first
 * lane read in stage t+1 (cycle >= e+L+2), and the lanes of item t-1
 * (reads by the end of e+GROUPS+1) finish before item t+1 overwrites their
 * half (from the end of cycle e+L+2).
 * en low freezes everything (the output is back-pressured).
 */
module layer_seq #
(
    // 0: one item per stage (BNN, decompress); 1: Dot9/lane double buffer
    parameter SNN = 0,
    // Dot9 steps per item (SNN only)
    parameter STEPS = 1,
    // output-channel groups of LANES lanes
    parameter GROUPS = 2,
    // items (input-channel groups) per output position
    parameter NG = 4,
    // width of dot_step
    parameter STEP_W = 1,
    // width of lane_grp
    parameter GRP_W = 1,
    // width of waddr (covers NG * GROUPS - 1)
    parameter WA_W = 3
)
(
    input  wire              clk,
    input  wire              rst,
    input  wire              en,

    // line_buffer cursor
    input  wire              ready,
    input  wire              peek_last,
    output wire              rd,

    // Dot9 issue: step dot_step into table half dot_half
    output wire              dot_v,
    output wire [STEP_W-1:0] dot_step,
    output wire              dot_half,

    // lane issue: group lane_grp, weight word waddr, table half lane_half
    output wire              lane_v,
    output wire [GRP_W-1:0]  lane_grp,
    output wire [WA_W-1:0]   waddr,
    output wire              lane_half,
    // a stage with lanes starts: line_buffer still shows the lanes' item
    output wire              lane_start
);

localparam SMAX = STEPS > GROUPS ? STEPS : GROUPS;
localparam CW = SMAX > 1 ? $clog2(SMAX) : 1;
localparam WN = NG * GROUPS;

initial begin
    if (SNN != 0 && SNN != 1) begin
        $error("layer_seq: SNN must be 0 or 1, found %0d (instance %m)", SNN);
        $finish;
    end
    if (STEPS < 1 || GROUPS < 1 || NG < 1) begin
        $error("layer_seq: STEPS, GROUPS, NG must be >= 1 (instance %m)");
        $finish;
    end
end

reg              act;        // a stage started earlier occupies this cycle
reg [CW-1:0]     c;          // its cycle
reg [CW:0]       st_len;
reg              st_dot;
reg              st_lane;
reg              st_dhalf;
reg              st_lhalf;
reg              pend;       // SNN: the last Dot9 stage's item awaits its lanes
reg              pend_last;  // ... and ends its image
reg              dh;         // SNN: table half of the next Dot9 stage
reg [WA_W-1:0]   wa;

wire drain = SNN != 0 && pend && pend_last;
wire start = en && !act && (drain || ready);
wire start_dot = SNN != 0 && !drain;
wire start_lane = SNN == 0 || pend;
wire [CW:0] start_len = !start_dot ? GROUPS[CW:0] : start_lane ? SMAX[CW:0] : STEPS[CW:0];

wire [CW-1:0] cur_c = act ? c : {CW{1'b0}};
wire cur_dot = act ? st_dot : start_dot;
wire cur_lane = act ? st_lane : start_lane;
wire busy = en && (act || start);

assign rd = start && (SNN == 0 || start_dot);
assign dot_v = busy && cur_dot && {{(32-CW){1'b0}}, cur_c} < STEPS;
assign dot_step = cur_c[STEP_W-1:0];
assign dot_half = act ? st_dhalf : dh;
assign lane_v = busy && cur_lane && {{(32-CW){1'b0}}, cur_c} < GROUPS;
assign lane_grp = cur_c[GRP_W-1:0];
assign lane_half = act ? st_lhalf : !dh;
assign waddr = wa;
assign lane_start = start && start_lane;

always @(posedge clk) begin
    if (start) begin
        st_len <= start_len;
        st_dot <= start_dot;
        st_lane <= start_lane;
        st_dhalf <= dh;
        st_lhalf <= !dh;
        if (start_len > 1) begin
            act <= 1'b1;
            c <= {{(CW-1){1'b0}}, 1'b1};
        end
        if (start_dot) begin
            dh <= !dh;
            pend <= 1'b1;
            pend_last <= peek_last;
        end else begin
            pend <= 1'b0;
        end
    end else if (en && act) begin
        if ({1'b0, c} == st_len - 1'b1) begin
            act <= 1'b0;
        end else begin
            c <= c + 1'b1;
        end
    end
    if (lane_v) begin
        wa <= {{(32-WA_W){1'b0}}, wa} == WN - 1 ? {WA_W{1'b0}} : wa + 1'b1;
    end
    if (rst) begin
        act <= 1'b0;
        c <= {CW{1'b0}};
        st_len <= {(CW+1){1'b0}};
        st_dot <= 1'b0;
        st_lane <= 1'b0;
        st_dhalf <= 1'b0;
        st_lhalf <= 1'b0;
        pend <= 1'b0;
        pend_last <= 1'b0;
        dh <= 1'b0;
        wa <= {WA_W{1'b0}};
    end
end

endmodule

`default_nettype wire
