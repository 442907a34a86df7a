`timescale 1ns / 1ps
`default_nettype none

/*
 * Layer sequencer shared by both engines: a start/done FSM that walks the
 * output positions in raster order and, per position,
 *   FETCH: three cycles issuing the window columns,
 *   RUN:   NSTAGE lockstep stages. With DOT_STEPS > 0 (sub-bit engine)
 *          stage k issues the Dot9 steps of input channel k (DOT_STEPS
 *          cycles) while the lanes issue the GROUPS output-channel groups
 *          of channel k-1 (GROUPS cycles), so the table of channel k is
 *          built while that of channel k-1 is read; a stage lasts as long
 *          as its longer half. With DOT_STEPS = 0 (BNN) stage k only
 *          issues the lane groups of channel k.
 * Every issued operation executes one cycle later (memory latency); one
 * FLUSH cycle lets the last one finish. cycles counts the busy cycles of
 * the last run:
 *   HO*WO * (3 + sum of stage lengths) + 1.
 */
module layer_seq #
(
    // input channels
    parameter C_IN = 4,
    // output height
    parameter HO = 4,
    // output width
    parameter WO = 4,
    // convolution stride (1 or 2)
    parameter STRIDE = 1,
    // Dot9 steps per channel (ceil(2^TAU / P_DOT)); 0 for the BNN engine
    parameter DOT_STEPS = 4,
    // output-channel groups of LANES (ceil(C_OUT / LANES))
    parameter GROUPS = 2,
    // width of the input row coordinate
    parameter Y_W = 3,
    // width of the input column coordinate
    parameter X_W = 3,
    // width of a channel index
    parameter CH_W = 2,
    // width of a Dot9 step index
    parameter STEP_W = 2,
    // width of a group index
    parameter GRP_W = 1,
    // width of an output position index
    parameter POS_W = 4,
    // width of the cycle counter
    parameter CYC_W = 32
)
(
    input  wire              clk,
    input  wire              rst,

    input  wire              start,
    output wire              busy,
    output reg               done,
    output reg  [CYC_W-1:0]  cycles,

    // window fetch issue
    output wire              fetch_v,
    output wire [1:0]        fetch_col,
    output wire [Y_W-1:0]    iy,
    output wire [X_W-1:0]    ix,

    // Dot9 issue: step dot_step of channel dot_ch
    output wire              dot_v,
    output wire [CH_W-1:0]   dot_ch,
    output wire [STEP_W-1:0] dot_step,

    // lane issue: group lane_grp of channel lane_ch at position lane_pos
    output wire              lane_v,
    output wire [CH_W-1:0]   lane_ch,
    output wire [GRP_W-1:0]  lane_grp,
    output wire [POS_W-1:0]  lane_pos,
    output wire              lane_first,
    output wire              lane_last
);

localparam NSTAGE = DOT_STEPS > 0 ? C_IN + 1 : C_IN;
localparam SMAX = DOT_STEPS > GROUPS ? DOT_STEPS : GROUPS;
localparam STG_W = $clog2(NSTAGE + 1);
localparam T_W = SMAX > 1 ? $clog2(SMAX) : 1;

localparam [1:0] S_IDLE = 2'd0, S_FETCH = 2'd1, S_RUN = 2'd2, S_FLUSH = 2'd3;

reg [1:0]       state;
reg [1:0]       fcol;
reg [STG_W-1:0] stage;
reg [T_W-1:0]   tcyc;
reg [Y_W-1:0]   iy_reg;
reg [X_W-1:0]   ix_reg;
reg [POS_W-1:0] pos;

// length of the current stage (see header); a continuous assignment, since
// with DOT_STEPS = 0 it is constant and an always @* would never run
wire [T_W:0] stage_len =
    DOT_STEPS == 0                          ? GROUPS[T_W:0] :
    {{(32-STG_W){1'b0}}, stage} == 0        ? DOT_STEPS[T_W:0] :
    {{(32-STG_W){1'b0}}, stage} == C_IN     ? GROUPS[T_W:0] :
                                              SMAX[T_W:0];

wire stage_end = {1'b0, tcyc} == stage_len - 1'b1;
wire last_stage = {{(32-STG_W){1'b0}}, stage} == NSTAGE - 1;
wire last_pos = {{(32-POS_W){1'b0}}, pos} == HO*WO - 1;
wire last_col = {{(32-X_W){1'b0}}, ix_reg} == (WO - 1) * STRIDE;

wire [31:0] stage32 = {{(32-STG_W){1'b0}}, stage};
wire [31:0] tcyc32 = {{(32-T_W){1'b0}}, tcyc};
wire [31:0] lane_ch32 = DOT_STEPS > 0 ? stage32 - 1 : stage32;

assign busy = state != S_IDLE;

assign fetch_v = state == S_FETCH;
assign fetch_col = fcol;
assign iy = iy_reg;
assign ix = ix_reg;

assign dot_v = state == S_RUN && DOT_STEPS > 0 && stage32 < C_IN && tcyc32 < DOT_STEPS;
assign dot_ch = stage32[CH_W-1:0];
assign dot_step = tcyc32[STEP_W-1:0];

assign lane_v = state == S_RUN && (DOT_STEPS == 0 || stage32 > 0) && tcyc32 < GROUPS;
assign lane_ch = lane_ch32[CH_W-1:0];
assign lane_grp = tcyc32[GRP_W-1:0];
assign lane_pos = pos;
assign lane_first = lane_ch32 == 0;
assign lane_last = lane_ch32 == C_IN - 1;

always @(posedge clk) begin
    done <= 1'b0;
    if (state != S_IDLE) begin
        cycles <= cycles + 1'b1;
    end
    case (state)
        S_IDLE: begin
            if (start) begin
                state <= S_FETCH;
                fcol <= 2'd0;
                iy_reg <= {Y_W{1'b0}};
                ix_reg <= {X_W{1'b0}};
                pos <= {POS_W{1'b0}};
                cycles <= {CYC_W{1'b0}};
            end
        end
        S_FETCH: begin
            fcol <= fcol + 1'b1;
            if (fcol == 2'd2) begin
                state <= S_RUN;
                stage <= {STG_W{1'b0}};
                tcyc <= {T_W{1'b0}};
            end
        end
        S_RUN: begin
            tcyc <= tcyc + 1'b1;
            if (stage_end) begin
                tcyc <= {T_W{1'b0}};
                stage <= stage + 1'b1;
                if (last_stage) begin
                    if (last_pos) begin
                        state <= S_FLUSH;
                    end else begin
                        state <= S_FETCH;
                        fcol <= 2'd0;
                        pos <= pos + 1'b1;
                        if (last_col) begin
                            ix_reg <= {X_W{1'b0}};
                            iy_reg <= iy_reg + STRIDE[Y_W-1:0];
                        end else begin
                            ix_reg <= ix_reg + STRIDE[X_W-1:0];
                        end
                    end
                end
            end
        end
        default: begin
            state <= S_IDLE;
            done <= 1'b1;
        end
    endcase
    if (rst) begin
        state <= S_IDLE;
        done <= 1'b0;
        cycles <= {CYC_W{1'b0}};
        fcol <= 2'd0;
        stage <= {STG_W{1'b0}};
        tcyc <= {T_W{1'b0}};
        iy_reg <= {Y_W{1'b0}};
        ix_reg <= {X_W{1'b0}};
        pos <= {POS_W{1'b0}};
    end
end

endmodule

`default_nettype wire
