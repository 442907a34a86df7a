`timescale 1ns / 1ps
`default_nettype none

/*
 * Line buffer and 3x3 window of one conv layer (padding 1, stride 1 or 2).
 *
 * Write side: the activation stream, one pixel per beat in raster order
 * (bits [c*A +: A] = channel c), images back to back. A pixel is written
 * as NG = ceil(C_IN / K) groups of K channels, one group per cycle, into
 * a ring of R = 3 + STRIDE image rows: rows oy*S-1 .. oy*S+1 feed output
 * row oy while the next STRIDE rows arrive. The first pixel of a row is
 * accepted only when a ring slot is free.
 *
 * Storage: three banks (column mod 3) of inferred RAM, address
 * (column div 3) * NG + group, word = R slots of K*A bits (one per ring
 * row, written separately). Any three neighbouring columns lie in three
 * different banks, so one read of each bank returns all nine taps of a
 * group: no window registers, no column copies, no fetch cycles.
 *
 * Read side: a cursor walks the items (output row oy, column ox, group g)
 * in raster order, g fastest. `ready` says the input rows of the item at
 * the cursor are complete; `rd` reads it and advances. The bank outputs
 * hold until the next read; the taps are selected from them and registered
 * one cycle later (the patch fans out to every Dot9 unit), so an item read
 * in cycle e is on the outputs from cycle e+2 until two cycles after the
 * next read. Reading the last item of an output row frees the rows no
 * later output row needs.
 */
module line_buffer #
(
    // input channels
    parameter C_IN = 4,
    // bits per activation
    parameter A = 1,
    // channels per group (read together)
    parameter K = 1,
    // image height
    parameter H = 4,
    // image width
    parameter W = 4,
    // stride (1 or 2)
    parameter STRIDE = 1
)
(
    input  wire                clk,
    input  wire                rst,

    // activation stream
    input  wire [C_IN*A-1:0]   s_tdata,
    input  wire                s_tvalid,
    output wire                s_tready,
    input  wire                s_tlast,
    // sticky: s_tlast disagreed with the image geometry
    output reg                 err,

    // read side (rd must only be high with ready); en low holds the outputs
    input  wire                en,
    output reg                 ready,
    output wire                peek_last,
    input  wire                rd,
    // the item read, registered two cycles after rd until two after the next:
    // tap j = 3*row + col: bits [(j*K + k)*A +: A] = channel g*K + k
    output reg  [9*K*A-1:0]    patch,
    output reg  [8:0]          mask,
    // channel g*K + k exists (C_IN need not be a multiple of K)
    output reg  [K-1:0]        chmask,
    // first / last group of its position, last item of the image
    output reg                 first,
    output reg                 last,
    output reg                 tlast,
    // taps inside the image at its position
    output reg  [3:0]          ntaps
);

localparam NG = (C_IN + K - 1) / K;
localparam KA = K * A;
localparam R = 3 + STRIDE;
// words per bank and group: columns up to W (the right padding column) / 3
localparam WB = W / 3 + 1;
localparam DEPTH = WB * NG;
localparam AW = DEPTH > 1 ? $clog2(DEPTH) : 1;
localparam HO = (H - 1) / STRIDE + 1;
localparam WO = (W - 1) / STRIDE + 1;
localparam GW = NG > 1 ? $clog2(NG) : 1;
localparam XW = W > 1 ? $clog2(W) : 1;
localparam YW = H > 1 ? $clog2(H) : 1;
localparam OXW = WO > 1 ? $clog2(WO) : 1;
localparam OYW = HO > 1 ? $clog2(HO) : 1;
localparam SW = $clog2(R);
localparam NW = $clog2(H + 1);
localparam AVW = $clog2(H + R + 1);
localparam UW = $clog2(R + 1);
// channels in the last group
localparam LASTK = C_IN - (NG - 1) * K;
// H mod R: how far the ring slot of row 0 moves per image
localparam HMR = H % R;
// rows output rows 0 and 1 need
localparam NEED0 = H > 2 ? 2 : H;
localparam NEED1 = H > 2 + STRIDE ? 2 + STRIDE : H;
// the last output row / column has no row / column below / right of the image
localparam BOTTOM_CUT = (HO - 1) * STRIDE + 1 > H - 1;
localparam RIGHT_CUT = (WO - 1) * STRIDE + 1 > W - 1;
// bank bases at a row start: columns 0, 1 and -1 (bank 2, negative: masked)
localparam [3*(AW+1)-1:0] ROW_BASE = {-NG[AW:0], {(2*(AW+1)){1'b0}}};

initial begin
    if (STRIDE != 1 && STRIDE != 2) begin
        $error("line_buffer: STRIDE must be 1 or 2, found %0d (instance %m)", STRIDE);
        $finish;
    end
    if (C_IN < 1 || A < 1 || K < 1 || H < 1 || W < 1) begin
        $error("line_buffer: C_IN, A, K, H, W must be >= 1 (instance %m)");
        $finish;
    end
end

// ------------------------------------------------------------------ write side

reg              full;       // a pixel is being written
reg [GW-1:0]     wg;         // its group written this cycle
reg [NG*KA-1:0]  pix;        // its groups not yet written, group wg lowest
reg [1:0]        cur_m;      // its bank
reg [AW-1:0]     cur_b;      // its (column div 3) * NG
reg [SW-1:0]     cur_s;      // its ring slot
reg              cur_eol;    // it ends a row

// position of the next pixel to accept
reg [XW-1:0]     nx;
reg [YW-1:0]     ny;
reg [1:0]        nm;
reg [AW-1:0]     nb;
reg [SW-1:0]     ns;

// ring bookkeeping shared with the read side
reg [UW-1:0]     used;       // ring slots holding rows not yet freed
reg [AVW-1:0]    avail;      // complete rows, counted from the read image's row 0

wire wlast = {{(32-GW){1'b0}}, wg} == NG - 1;
wire row_ok = nx != {XW{1'b0}} || {{(32-UW){1'b0}}, used} < R;

assign s_tready = (!full || wlast) && row_ok;

wire accept = s_tvalid && s_tready;
wire row_done = full && wlast && cur_eol;
wire end_of_image = {{(32-XW){1'b0}}, nx} == W - 1 && {{(32-YW){1'b0}}, ny} == H - 1;

always @(posedge clk) begin
    if (full) begin
        pix <= pix >> KA;
        wg <= wg + 1'b1;
        if (wlast) begin
            full <= 1'b0;
        end
    end
    if (accept) begin
        full <= 1'b1;
        wg <= {GW{1'b0}};
        pix <= {{(NG*KA-C_IN*A){1'b0}}, s_tdata};
        cur_m <= nm;
        cur_b <= nb;
        cur_s <= ns;
        cur_eol <= {{(32-XW){1'b0}}, nx} == W - 1;
        if (s_tlast != end_of_image) begin
            err <= 1'b1;
        end
        if ({{(32-XW){1'b0}}, nx} == W - 1) begin
            nx <= {XW{1'b0}};
            nm <= 2'd0;
            nb <= {AW{1'b0}};
            ns <= {{(32-SW){1'b0}}, ns} == R - 1 ? {SW{1'b0}} : ns + 1'b1;
            ny <= {{(32-YW){1'b0}}, ny} == H - 1 ? {YW{1'b0}} : ny + 1'b1;
        end else begin
            nx <= nx + 1'b1;
            nm <= nm == 2'd2 ? 2'd0 : nm + 1'b1;
            if (nm == 2'd2) begin
                nb <= nb + NG[AW-1:0];
            end
        end
    end
    if (rst) begin
        full <= 1'b0;
        wg <= {GW{1'b0}};
        err <= 1'b0;
        nx <= {XW{1'b0}};
        ny <= {YW{1'b0}};
        nm <= 2'd0;
        nb <= {AW{1'b0}};
        ns <= {SW{1'b0}};
    end
end

// ------------------------------------------------------------------ storage

wire [3*R*KA-1:0] bank_q;
wire [3*AW-1:0]   raddr;

genvar b, s;
generate
    for (b = 0; b < 3; b = b + 1) begin : bank
        wire [R-1:0] wen;
        for (s = 0; s < R; s = s + 1) begin : slot
            assign wen[s] = full && cur_m == b && cur_s == s;
        end
        ram_sdp #(.SLICE_W(KA), .SLICES(R), .DEPTH(DEPTH), .ADDR_W(AW)) ram (
            .clk(clk),
            .wen(wen), .waddr(cur_b + {{(AW-GW){1'b0}}, wg}), .wdata({R{pix[KA-1:0]}}),
            .re(rd), .raddr(raddr[b*AW +: AW]), .rdata(bank_q[b*R*KA +: R*KA])
        );
    end
endgenerate

// ------------------------------------------------------------------ read side

reg [GW-1:0]     g;
reg [OXW-1:0]    ox;
reg [OYW-1:0]    oy;
reg [3*(AW+1)-1:0] base;     // per bank: (column div 3) * NG of its window column
reg [2:0]        xm;         // one-hot: the bank of window column 0
reg [R-1:0]      ts;         // one-hot: the ring slot of window row 0 (row oy*S - 1)
reg [R-1:0]      s0;         // one-hot: the ring slot of the image's row 0
reg [NW-1:0]     need;       // rows output row oy needs: min(oy*S + 2, H)
reg [NW-1:0]     need_up;    // the next output row's: min(need + S, H)
reg [NW-1:0]     freed;      // rows of the image freed so far

wire g_last = {{(32-GW){1'b0}}, g} == NG - 1;
wire ox_last = {{(32-OXW){1'b0}}, ox} == WO - 1;
wire oy_last = {{(32-OYW){1'b0}}, oy} == HO - 1;
wire row_end = g_last && ox_last;

assign peek_last = row_end && oy_last;

// reading an output row's last item frees the rows below row (oy+1)*S - 1,
// or after the image's last output row the rest of it
// (32 bits wide: its low NW and UW bits are used)
/* verilator lint_off UNUSEDSIGNAL */
wire [31:0] free_k = oy_last ? H - {{(32-NW){1'b0}}, freed} : oy == {OYW{1'b0}} ? STRIDE - 1 : STRIDE;
/* verilator lint_on UNUSEDSIGNAL */
wire [UW-1:0] free_n = rd && row_end ? free_k[UW-1:0] : {UW{1'b0}};

// a window column left of the image (base < 0) reads address g; it is masked
genvar q;
generate
    for (q = 0; q < 3; q = q + 1) begin : addr
        wire [AW-1:0] a = base[q*(AW+1) +: AW] + {{(AW-GW){1'b0}}, g};
        assign raddr[q*AW +: AW] = base[q*(AW+1) + AW] ? {{(AW-GW){1'b0}}, g} : a[AW-1:0];
    end
endgenerate

// one-hot rotations
function [R-1:0] rot_r;
    input [R-1:0] v;
    input integer n;
    integer i;
    begin
        for (i = 0; i < R; i = i + 1) begin
            rot_r[(i + n) % R] = v[i];
        end
    end
endfunction

function [2:0] rot3;
    input [2:0] v;
    input integer n;
    integer i;
    begin
        for (i = 0; i < 3; i = i + 1) begin
            rot3[(i + n) % 3] = v[i];
        end
    end
endfunction

// the banks whose window column leaves when ox advances: S of them, from xm
wire [2:0] shift_out = STRIDE == 1 ? xm : xm | rot3(xm, 1);

// registered with the read: which slot is window row r, which bank column c
reg           rd_q;
reg [K-1:0]   r_chmask;
reg           r_first;
reg           r_last;
reg           r_tlast;
reg [3:0]     r_ntaps;
reg [3*R-1:0] rsel;
reg [8:0]     csel;
reg [2:0]     row_in;
reg [2:0]     col_in;

// next-cycle values of the row counts: `ready` is registered from them
wire [AVW-1:0] avail_n = avail + {{(AVW-1){1'b0}}, row_done} - (rd && peek_last ? H[AVW-1:0] : {AVW{1'b0}});
wire [NW-1:0]  need_n = !(rd && row_end) ? need : oy_last ? NEED0[NW-1:0] : need_up;
wire [NW-1:0]  need_up2 = {{(32-NW){1'b0}}, need_up} + STRIDE > H ? H[NW-1:0] : need_up + STRIDE[NW-1:0];

integer k, n;
always @(posedge clk) begin
    used <= used + {{(UW-1){1'b0}}, accept && nx == {XW{1'b0}}} - free_n;
    avail <= avail_n;
    need <= need_n;
    need_up <= !(rd && row_end) ? need_up : oy_last ? NEED1[NW-1:0] : need_up2;
    ready <= {{(32-AVW){1'b0}}, avail_n} >= {{(32-NW){1'b0}}, need_n};
    if (rd) begin
        rsel <= {rot_r(ts, 2), rot_r(ts, 1), ts};
        csel <= {rot3(xm, 2), rot3(xm, 1), xm};
        row_in <= {!(oy_last && BOTTOM_CUT), 1'b1, oy != {OYW{1'b0}}};
        col_in <= {!(ox_last && RIGHT_CUT), 1'b1, ox != {OXW{1'b0}}};
        for (k = 0; k < K; k = k + 1) begin
            r_chmask[k] <= !g_last || k < LASTK;
        end
        r_first <= g == {GW{1'b0}};
        r_last <= g_last;
        r_tlast <= peek_last;
        r_ntaps <= ({3'd0, oy != {OYW{1'b0}}} + {3'd0, !(oy_last && BOTTOM_CUT)} + 4'd1)
            * ({3'd0, ox != {OXW{1'b0}}} + {3'd0, !(ox_last && RIGHT_CUT)} + 4'd1);
        g <= g + 1'b1;
        if (g_last) begin
            g <= {GW{1'b0}};
            ox <= ox + 1'b1;
            xm <= rot3(xm, STRIDE);
            for (n = 0; n < 3; n = n + 1) begin
                if (shift_out[n]) begin
                    base[n*(AW+1) +: AW+1] <= base[n*(AW+1) +: AW+1] + NG[AW:0];
                end
            end
            if (ox_last) begin
                ox <= {OXW{1'b0}};
                xm <= 3'b100;
                base <= ROW_BASE;
                freed <= freed + free_k[NW-1:0];
                if (oy_last) begin
                    oy <= {OYW{1'b0}};
                    s0 <= rot_r(s0, HMR);
                    ts <= rot_r(s0, HMR + R - 1);
                    freed <= {NW{1'b0}};
                end else begin
                    oy <= oy + 1'b1;
                    ts <= rot_r(ts, STRIDE);
                end
            end
        end
    end
    if (rst) begin
        used <= {UW{1'b0}};
        avail <= {AVW{1'b0}};
        g <= {GW{1'b0}};
        ox <= {OXW{1'b0}};
        oy <= {OYW{1'b0}};
        xm <= 3'b100;
        base <= ROW_BASE;
        s0 <= {{(R-1){1'b0}}, 1'b1};
        ts <= {1'b1, {(R-1){1'b0}}};
        need <= NEED0[NW-1:0];
        need_up <= NEED1[NW-1:0];
        ready <= 1'b0;
        freed <= {NW{1'b0}};
        r_first <= 1'b0;
        r_last <= 1'b0;
        r_tlast <= 1'b0;
        r_ntaps <= 4'd0;
        r_chmask <= {K{1'b0}};
        rsel <= {3*R{1'b0}};
        csel <= 9'd0;
        row_in <= 3'd0;
        col_in <= 3'd0;
    end
end

// taps in two steps: window row r of every bank (its ring slot), then
// window column c (its bank); one-hot AND-OR multiplexers
reg [9*KA-1:0] bank_row;  // bank b, window row r at [(3*b + r)*KA]
reg [9*KA-1:0] taps;

integer r, c, bk, sl;
always @* begin
    bank_row = {9*KA{1'b0}};
    for (bk = 0; bk < 3; bk = bk + 1) begin
        for (r = 0; r < 3; r = r + 1) begin
            for (sl = 0; sl < R; sl = sl + 1) begin
                bank_row[(3*bk + r)*KA +: KA] = bank_row[(3*bk + r)*KA +: KA]
                    | (bank_q[(bk*R + sl)*KA +: KA] & {KA{rsel[R*r + sl]}});
            end
        end
    end
    taps = {9*KA{1'b0}};
    for (r = 0; r < 3; r = r + 1) begin
        for (c = 0; c < 3; c = c + 1) begin
            for (bk = 0; bk < 3; bk = bk + 1) begin
                taps[(3*r + c)*KA +: KA] = taps[(3*r + c)*KA +: KA]
                    | (bank_row[(3*bk + r)*KA +: KA] & {KA{csel[3*c + bk]}});
            end
        end
    end
end

integer j;
always @(posedge clk) begin
    if (en) begin
        rd_q <= rd;
        if (rd_q) begin
            patch <= taps;
            for (j = 0; j < 9; j = j + 1) begin
                mask[j] <= row_in[j / 3] && col_in[j % 3];
            end
            chmask <= r_chmask;
            first <= r_first;
            last <= r_last;
            tlast <= r_tlast;
            ntaps <= r_ntaps;
        end
    end
    if (rst) begin
        rd_q <= 1'b0;
        mask <= 9'd0;
        chmask <= {K{1'b0}};
        first <= 1'b0;
        last <= 1'b0;
        tlast <= 1'b0;
        ntaps <= 4'd0;
    end
end

endmodule

`default_nettype wire
