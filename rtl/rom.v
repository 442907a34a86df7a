`timescale 1ns / 1ps
`default_nettype none

/*
 * Read-only memory with one registered read port and a read enable (the
 * output holds while re is low), initialised from a $readmemh file (one
 * hex word per line). One port only: an engine reads a whole wide word
 * (all lanes' weights) per cycle instead of one narrow word per lane, so
 * synthesis never copies the memory per port.
 */
module rom #
(
    // word width in bits
    parameter WIDTH = 9,
    // number of words
    parameter DEPTH = 16,
    // address width in bits (must cover DEPTH - 1)
    parameter ADDR_W = 4,
    // $readmemh file name
    parameter INIT_FILE = "rom.hex"
)
(
    input  wire              clk,
    input  wire              re,
    input  wire [ADDR_W-1:0] addr,
    output reg  [WIDTH-1:0]  q
);

reg [WIDTH-1:0] mem [0:DEPTH-1];

initial begin
    if (DEPTH < 1 || (1 << ADDR_W) < DEPTH) begin
        $error("rom: ADDR_W = %0d cannot address DEPTH = %0d words (instance %m)", ADDR_W, DEPTH);
        $finish;
    end
    $readmemh(INIT_FILE, mem);
end

always @(posedge clk) begin
    if (re) begin
        q <= mem[addr];
    end
end

endmodule

`default_nettype wire
