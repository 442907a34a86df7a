`timescale 1ns / 1ps
`default_nettype none

/*
 * Simple dual-port RAM: one write port whose word is SLICES slices with a
 * write enable each, and one registered read port with a read enable (the
 * output holds while re is low). Synthesis infers block RAM or LUT-RAM.
 *
 * no_rw_check: no caller ever reads a slice in the cycle it is written
 * (line_buffer writes one row slot while others are read; lane_acc and
 * snn_table keep at least one cycle between a write and a read of the same
 * word, see there), so synthesis needs no read-during-write logic.
 */
module ram_sdp #
(
    // bits per slice
    parameter SLICE_W = 8,
    // slices per word, each with its own write enable
    parameter SLICES = 1,
    // words
    parameter DEPTH = 16,
    // address bits (must cover DEPTH - 1)
    parameter ADDR_W = 4
)
(
    input  wire                      clk,

    input  wire [SLICES-1:0]         wen,
    input  wire [ADDR_W-1:0]         waddr,
    input  wire [SLICES*SLICE_W-1:0] wdata,

    input  wire                      re,
    input  wire [ADDR_W-1:0]         raddr,
    output reg  [SLICES*SLICE_W-1:0] rdata
);

initial begin
    if (DEPTH < 1 || (1 << ADDR_W) < DEPTH) begin
        $error("ram_sdp: ADDR_W = %0d cannot address DEPTH = %0d words (instance %m)", ADDR_W, DEPTH);
        $finish;
    end
end

(* no_rw_check *)
reg [SLICES*SLICE_W-1:0] mem [0:DEPTH-1];

integer s;

always @(posedge clk) begin
    for (s = 0; s < SLICES; s = s + 1) begin
        if (wen[s]) begin
            mem[waddr][s*SLICE_W +: SLICE_W] <= wdata[s*SLICE_W +: SLICE_W];
        end
    end
    if (re) begin
        rdata <= mem[raddr];
    end
end

endmodule

`default_nettype wire
