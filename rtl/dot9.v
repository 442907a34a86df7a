`timescale 1ns / 1ps
`default_nettype none

/*
 * Dot product of a 3x3 binary patch and a 3x3 binary kernel, both as
 * 9-bit codes (bit j = element (j/3, j%3), 1 = +1). Taps outside the
 * image (mask bit 0) contribute 0, as zero padding does in the Python
 * model: dot = popcount(~(a^k) & mask) - popcount((a^k) & mask).
 * Purely combinational; result in -9..9.
 */
module dot9
(
    // patch code
    input  wire [8:0]        a,
    // kernel code
    input  wire [8:0]        k,
    // 1 where the tap lies inside the image
    input  wire [8:0]        mask,
    output wire signed [4:0] dot
);

function [4:0] popcount9;
    input [8:0] v;
    integer j;
    begin
        popcount9 = 5'd0;
        for (j = 0; j < 9; j = j + 1) begin
            popcount9 = popcount9 + {4'd0, v[j]};
        end
    end
endfunction

wire [8:0] diff = a ^ k;

// both counts lie in 0..9, so their 5-bit difference is exact in -9..9
assign dot = popcount9(~diff & mask) - popcount9(diff & mask);

endmodule

`default_nettype wire
