`timescale 1ns / 1ps
`default_nettype none

/*
 * LANES output-channel accumulators shared by both engines. Each valid
 * cycle adds one signed contribution (a Dot9 result, -9..9) per lane to
 * the accumulators of output-channel group grp (channels grp*LANES + l);
 * the first input channel overwrites instead of adding, so no clear pass
 * is needed. With the last input channel the finished sums leave through
 * the registered output port with their threshold bits
 * (flip ? sum <= thresh : sum >= thresh).
 */
module lane_acc #
(
    // parallel output-channel lanes
    parameter LANES = 4,
    // output-channel groups (accumulator words)
    parameter GROUPS = 2,
    // width of a group index
    parameter GRP_W = 1,
    // width of an output position index
    parameter POS_W = 4,
    // width of an accumulated sum (two's complement)
    parameter SUM_W = 8,
    // width of a threshold (two's complement, >= SUM_W)
    parameter THR_W = 32
)
(
    input  wire                   clk,
    input  wire                   rst,

    input  wire                   v,
    input  wire [GRP_W-1:0]       grp,
    input  wire [POS_W-1:0]       pos,
    input  wire                   first,
    input  wire                   last,
    // lane l contributes val[l*5 +: 5]
    input  wire [LANES*5-1:0]     val,
    input  wire [LANES*THR_W-1:0] thresh,
    input  wire [LANES-1:0]       flip,

    output reg                    out_valid,
    output reg  [POS_W-1:0]       out_pos,
    output reg  [GRP_W-1:0]       out_grp,
    output reg  [LANES*SUM_W-1:0] out_sums,
    output reg  [LANES-1:0]       out_bits
);

reg [LANES*SUM_W-1:0] acc [0:GROUPS-1];

wire [LANES*SUM_W-1:0] acc_old = acc[grp];
reg  [LANES*SUM_W-1:0] acc_new;
reg  [LANES-1:0]       bit_new;

integer l;

always @* begin
    for (l = 0; l < LANES; l = l + 1) begin
        acc_new[l*SUM_W +: SUM_W] = (first ? {SUM_W{1'b0}} : acc_old[l*SUM_W +: SUM_W])
            + {{(SUM_W-5){val[l*5+4]}}, val[l*5 +: 5]};
        if (flip[l]) begin
            bit_new[l] = $signed({{(THR_W-SUM_W){acc_new[l*SUM_W+SUM_W-1]}}, acc_new[l*SUM_W +: SUM_W]})
                <= $signed(thresh[l*THR_W +: THR_W]);
        end else begin
            bit_new[l] = $signed({{(THR_W-SUM_W){acc_new[l*SUM_W+SUM_W-1]}}, acc_new[l*SUM_W +: SUM_W]})
                >= $signed(thresh[l*THR_W +: THR_W]);
        end
    end
end

always @(posedge clk) begin
    if (v) begin
        acc[grp] <= acc_new;
    end
    out_valid <= v && last;
    if (v && last) begin
        out_pos <= pos;
        out_grp <= grp;
        out_sums <= acc_new;
        out_bits <= bit_new;
    end
    if (rst) begin
        out_valid <= 1'b0;
        out_pos <= {POS_W{1'b0}};
        out_grp <= {GRP_W{1'b0}};
        out_sums <= {LANES*SUM_W{1'b0}};
        out_bits <= {LANES{1'b0}};
    end
end

endmodule

`default_nettype wire
