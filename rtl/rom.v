`timescale 1ns / 1ps
`default_nettype none

/*
 * Read-only memory with PORTS independent synchronous read ports (one
 * cycle latency), initialised from a $readmemh file (one hex word per
 * line). Several ports let LANES lanes read their own word each cycle;
 * synthesis replicates the memory per port.
 */
module rom #
(
    // word width in bits
    parameter WIDTH = 9,
    // number of words
    parameter DEPTH = 16,
    // address width in bits (must cover DEPTH - 1)
    parameter ADDR_W = 4,
    // number of independent read ports
    parameter PORTS = 1,
    // $readmemh file name ("" leaves the memory uninitialised)
    parameter INIT_FILE = ""
)
(
    input  wire                    clk,

    // port p reads addr[p*ADDR_W +: ADDR_W] into q[p*WIDTH +: WIDTH]
    input  wire [PORTS*ADDR_W-1:0] addr,
    output reg  [PORTS*WIDTH-1:0]  q
);

reg [WIDTH-1:0] mem [0:DEPTH-1];

initial begin
    if (INIT_FILE != "") begin
        $readmemh(INIT_FILE, mem);
    end
end

integer p;

always @(posedge clk) begin
    for (p = 0; p < PORTS; p = p + 1) begin
        q[p*WIDTH +: WIDTH] <= mem[addr[p*ADDR_W +: ADDR_W]];
    end
end

endmodule

`default_nettype wire
