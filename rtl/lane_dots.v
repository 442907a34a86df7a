`timescale 1ns / 1ps
`default_nettype none

/*
 * The Dot9 units of the BNN and decompress engines: lane l owns K Dot9
 * units, one per channel of the group being read, each on the lane's own
 * kernel, and adds their counts (LANES * K = DOT9 units). Combinational.
 */
module lane_dots #
(
    // lanes
    parameter LANES = 4,
    // channels per group (Dot9 units per lane)
    parameter K = 1,
    // activation bits
    parameter A = 1,
    // width of a Dot9 count
    parameter P_W = 4,
    // width of a lane's sum of K counts
    parameter VAL_W = 4
)
(
    // tap j of channel k in bits [(j*K + k)*A +: A]
    input  wire [9*K*A-1:0]       patch,
    input  wire [8:0]             mask,
    input  wire [K-1:0]           chmask,
    // kernel code of lane l, channel k in bits [(l*K + k)*9 +: 9]
    input  wire [LANES*K*9-1:0]   codes,
    output reg  [LANES*VAL_W-1:0] val
);

wire [LANES*K*P_W-1:0] p;

genvar l, k, j;
generate
    for (k = 0; k < K; k = k + 1) begin : chan
        wire [9*A-1:0] a;
        for (j = 0; j < 9; j = j + 1) begin : tap
            assign a[j*A +: A] = patch[(j*K + k)*A +: A];
        end
        for (l = 0; l < LANES; l = l + 1) begin : lane
            dot9 #(.A(A), .P_W(P_W)) unit (
                .a(a), .k(codes[(l*K + k)*9 +: 9]), .mask(mask & {9{chmask[k]}}),
                .p(p[(l*K + k)*P_W +: P_W])
            );
        end
    end
endgenerate

integer m, n;

always @* begin
    for (m = 0; m < LANES; m = m + 1) begin
        val[m*VAL_W +: VAL_W] = {VAL_W{1'b0}};
        for (n = 0; n < K; n = n + 1) begin
            val[m*VAL_W +: VAL_W] = val[m*VAL_W +: VAL_W] + {{(VAL_W-P_W){1'b0}}, p[(m*K + n)*P_W +: P_W]};
        end
    end
end

endmodule

`default_nettype wire
