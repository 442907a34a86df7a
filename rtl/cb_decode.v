`timescale 1ns / 1ps
`default_nettype none

/*
 * The decompress engine's codebook: PORTS independent combinational reads
 * of the 2^TAU kernel codes, one per Dot9 unit. Every port is its own
 * copy (a small constant ROM in logic): each lane decodes its indices
 * itself, the cost of storing sub-bit weights without sharing the dots.
 */
module cb_decode #
(
    // codebook index bits
    parameter TAU = 2,
    // read ports
    parameter PORTS = 1,
    // $readmemh file: 2^TAU words of 9 bits
    parameter INIT_FILE = "codebook.hex"
)
(
    input  wire [PORTS*TAU-1:0] idx,
    output wire [PORTS*9-1:0]   codes
);

reg [8:0] cb [0:(1<<TAU)-1];

initial begin
    $readmemh(INIT_FILE, cb);
end

genvar q;
generate
    for (q = 0; q < PORTS; q = q + 1) begin : port
        assign codes[q*9 +: 9] = cb[idx[q*TAU +: TAU]];
    end
endgenerate

endmodule

`default_nettype wire
