`timescale 1ns / 1ps
`default_nettype none

/*
 * Dot9: one 3x3 kernel of +-1 weights against a 3x3 patch of A-bit
 * activations, as the count the engines accumulate.
 *
 * An activation code u (0 .. M, M = 2^A - 1) stands for the odd value
 * 2u - M (A = 1: 0 is -1, 1 is +1). Kernel bit k_j = 1 is +1. Tap j adds
 * t_j = u_j where k_j = 1 and M - u_j (= ~u_j in A bits) where k_j = 0,
 * and nothing outside the image (mask bit 0, zero padding). Then
 *   sum_j k_j * value_j = 2 * p - M * n,   p = sum_j t_j, n = taps in mask,
 * so one unsigned sum per Dot9 suffices; the engines apply -M*n once per
 * output position for all channels (lane_acc). A = 1: p is the popcount of
 * agreeing taps, dot = 2p - n. Combinational; p in 0 .. 9M.
 */
module dot9 #
(
    // activation bits
    parameter A = 1,
    // width of p (must hold 9 * (2^A - 1))
    parameter P_W = 4
)
(
    // patch: tap j = 3*row + col in bits [j*A +: A]
    input  wire [9*A-1:0] a,
    // kernel code: bit j = tap j, 1 = +1
    input  wire [8:0]     k,
    // 1 where the tap lies inside the image
    input  wire [8:0]     mask,
    output wire [P_W-1:0] p
);

// masked, kernel-signed taps; then a tree of three row sums (a chain of
// nine adds maps to about three times the LUTs)
wire [9*A-1:0] t;

genvar j;
generate
    for (j = 0; j < 9; j = j + 1) begin : tap
        assign t[j*A +: A] = (a[j*A +: A] ^ {A{~k[j]}}) & {A{mask[j]}};
    end
endgenerate

wire [A+1:0] row0 = {2'b00, t[0*A +: A]} + {2'b00, t[1*A +: A]} + {2'b00, t[2*A +: A]};
wire [A+1:0] row1 = {2'b00, t[3*A +: A]} + {2'b00, t[4*A +: A]} + {2'b00, t[5*A +: A]};
wire [A+1:0] row2 = {2'b00, t[6*A +: A]} + {2'b00, t[7*A +: A]} + {2'b00, t[8*A +: A]};
// 9 * (2^A - 1) < 2^(A+4); P_W holds it
/* verilator lint_off UNUSEDSIGNAL */
wire [A+3:0] sum = {2'b00, row0} + {2'b00, row1} + {2'b00, row2};
/* verilator lint_on UNUSEDSIGNAL */

assign p = sum[P_W-1:0];

endmodule

`default_nettype wire
