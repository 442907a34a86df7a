`timescale 1ns / 1ps
`default_nettype none

/*
 * Output stream of an engine (AXI-Stream style, tdata/tvalid/tready/tlast,
 * tlast on the image's last beat), with back-pressure.
 *
 * OUT_SUMS = 0: one beat per output position, C_OUT threshold bits (bit o
 *   = channel o): the next layer's activation word, so layers chain. The
 *   GROUPS lane groups of a position arrive one per cycle and are shifted
 *   into a collector at a constant index.
 * OUT_SUMS = 1: one beat per lane group: lane l in bits
 *   [l*(SUM_W+1) +: SUM_W+1] = {threshold bit, sum}.
 *
 * A two-word FIFO decouples the consumer: en (the whole engine's enable)
 * drops while it is full, a registered decision, so tready reaches no
 * engine logic combinationally. With tready high the FIFO never fills.
 */
module out_pack #
(
    // 1: sums beats, 0: threshold-bit beats
    parameter OUT_SUMS = 0,
    // lanes
    parameter LANES = 4,
    // lane groups per position
    parameter GROUPS = 2,
    // output channels
    parameter C_OUT = 8,
    // width of a sum
    parameter SUM_W = 9,
    // beat width: LANES*(SUM_W+1) with OUT_SUMS, else C_OUT
    parameter DW = 8
)
(
    input  wire                   clk,
    input  wire                   rst,
    output wire                   en,

    input  wire                   ov,
    input  wire [LANES*SUM_W-1:0] osums,
    input  wire [LANES-1:0]       obits,
    input  wire                   otlast,

    output wire [DW-1:0]          m_tdata,
    output wire                   m_tvalid,
    input  wire                   m_tready,
    output wire                   m_tlast
);

initial begin
    if (DW != (OUT_SUMS != 0 ? LANES * (SUM_W + 1) : C_OUT)) begin
        $error("out_pack: DW = %0d does not match OUT_SUMS = %0d (instance %m)", DW, OUT_SUMS);
        $finish;
    end
end

wire          push;
wire [DW-1:0] word;

generate
    if (OUT_SUMS != 0) begin : sums
        genvar l;
        for (l = 0; l < LANES; l = l + 1) begin : lane
            assign word[l*(SUM_W+1) +: SUM_W+1] = {obits[l], osums[l*SUM_W +: SUM_W]};
        end
        assign push = en && ov;
    end else if (GROUPS == 1) begin : bits1
        assign word = obits[C_OUT-1:0];
        assign push = en && ov;
        // the sums leave only in OUT_SUMS mode
        /* verilator lint_off UNUSEDSIGNAL */
        wire unused = ^osums ^ ^obits;
        /* verilator lint_on UNUSEDSIGNAL */
    end else begin : bits
        localparam GC_W = $clog2(GROUPS);
        reg  [(GROUPS-1)*LANES-1:0] col;
        reg  [GC_W-1:0]             gc;
        wire [GROUPS*LANES-1:0]     cat = {obits, col};
        always @(posedge clk) begin
            if (en && ov) begin
                col <= cat[GROUPS*LANES-1:LANES];
                gc <= {{(32-GC_W){1'b0}}, gc} == GROUPS - 1 ? {GC_W{1'b0}} : gc + 1'b1;
            end
            if (rst) begin
                gc <= {GC_W{1'b0}};
            end
        end
        assign word = cat[C_OUT-1:0];
        assign push = en && ov && {{(32-GC_W){1'b0}}, gc} == GROUPS - 1;
        /* verilator lint_off UNUSEDSIGNAL */
        wire unused = ^osums ^ ^cat;
        /* verilator lint_on UNUSEDSIGNAL */
    end
endgenerate

// two-entry FIFO; f0 is the head
reg [DW:0] f0;
reg [DW:0] f1;
reg [1:0]  cnt;

wire pop = cnt != 2'd0 && m_tready;
wire [1:0] cnt_n = cnt + {1'b0, push} - {1'b0, pop};

// en = (cnt != 2), registered from the next count: it fans out to the whole engine
reg en_r;
assign en = en_r;
assign m_tvalid = cnt != 2'd0;
assign m_tdata = f0[DW-1:0];
assign m_tlast = f0[DW];

always @(posedge clk) begin
    if (pop) begin
        f0 <= f1;
    end
    if (push) begin
        if (cnt == 2'd0 || (cnt == 2'd1 && pop)) begin
            f0 <= {otlast, word};
        end else begin
            f1 <= {otlast, word};
        end
    end
    cnt <= cnt_n;
    en_r <= cnt_n != 2'd2;
    if (rst) begin
        cnt <= 2'd0;
        en_r <= 1'b1;
        f0 <= {(DW+1){1'b0}};
        f1 <= {(DW+1){1'b0}};
    end
end

endmodule

`default_nettype wire
