`timescale 1ns / 1ps
`default_nettype none

/*
 * Place-and-route harness for conv_layer: the engine's wide stream ports
 * cannot go to package pins, so one pin shifts the input beat in, and the
 * output beat is XOR-reduced to one pin (every output bit stays observable,
 * so synthesis keeps all logic). Adds C_IN*A flip-flops and about DW/3
 * LUT4s to the engine; used only to measure fmax and fit
 * (minisnn/rtlsynth.py).
 */
module pnr_wrap #
(
    // engine parameters (see conv_layer.v)
    parameter ENGINE = 1,
    parameter C_IN = 4,
    parameter C_OUT = 8,
    parameter H = 4,
    parameter W = 4,
    parameter STRIDE = 1,
    parameter A = 1,
    parameter TAU = 2,
    parameter LANES = 4,
    parameter DOT9 = 2,
    parameter TABLE_RAM = 0,
    parameter HAS_THRESH = 1,
    parameter OUT_SUMS = 0,
    parameter WEIGHT_FILE = "layer.weight.hex",
    parameter CODEBOOK_FILE = "layer.codebook.hex",
    parameter THRESH_FILE = "layer.thresh.hex"
)
(
    input  wire clk,
    input  wire rst,
    input  wire din,
    input  wire s_tvalid,
    input  wire s_tlast,
    output wire s_tready,
    input  wire m_tready,
    output reg  dout,
    output reg  m_tvalid_q,
    output wire err
);

localparam DW = OUT_SUMS != 0 ? LANES * ($clog2(9 * ((1 << A) - 1) * C_IN + 2) + 2) : C_OUT;

reg  [C_IN*A-1:0] shift;
wire [DW-1:0]     m_tdata;
wire              m_tvalid;
wire              m_tlast;

wire [C_IN*A:0] shifted = {shift, din};

always @(posedge clk) begin
    shift <= shifted[C_IN*A-1:0];
    dout <= ^{m_tdata, m_tlast};
    m_tvalid_q <= m_tvalid;
end

conv_layer #(
    .ENGINE(ENGINE), .C_IN(C_IN), .C_OUT(C_OUT), .H(H), .W(W), .STRIDE(STRIDE), .A(A), .TAU(TAU),
    .LANES(LANES), .DOT9(DOT9), .TABLE_RAM(TABLE_RAM), .HAS_THRESH(HAS_THRESH), .OUT_SUMS(OUT_SUMS),
    .WEIGHT_FILE(WEIGHT_FILE), .CODEBOOK_FILE(CODEBOOK_FILE), .THRESH_FILE(THRESH_FILE)
) engine (
    .clk(clk), .rst(rst),
    .s_tdata(shift), .s_tvalid(s_tvalid), .s_tready(s_tready), .s_tlast(s_tlast),
    .m_tdata(m_tdata), .m_tvalid(m_tvalid), .m_tready(m_tready), .m_tlast(m_tlast),
    .err(err)
);

endmodule

`default_nettype wire
