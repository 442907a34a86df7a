`timescale 1ns / 1ps
`default_nettype none

/*
 * 3x3 activation window. The activation memory holds one word per pixel
 * (address y*W + x), bit c of the word being channel c (1 = +1). The
 * window reads the three rows of one window column per cycle through
 * three read ports (fetch_col 0, 1, 2 over three cycles), captures them
 * one cycle later (memory latency) and then serves the 9-bit patch code
 * of any channel ch, with the mask of taps that lie inside the image
 * (zero padding: taps outside contribute 0 downstream).
 */
module act_window #
(
    // input channels (bits per activation word)
    parameter C_IN = 4,
    // image height
    parameter H = 8,
    // image width
    parameter W = 8,
    // activation memory address width
    parameter ADDR_W = 6,
    // width of the row coordinate iy
    parameter Y_W = 3,
    // width of the column coordinate ix
    parameter X_W = 3,
    // width of the channel select
    parameter CH_W = 2
)
(
    input  wire                  clk,
    input  wire                  rst,

    // fetch request: window column fetch_col of the window centred on (iy, ix)
    input  wire                  fetch_v,
    input  wire [1:0]            fetch_col,
    input  wire [Y_W-1:0]        iy,
    input  wire [X_W-1:0]        ix,

    // activation memory, port r reads window row r
    output wire [3*ADDR_W-1:0]   mem_addr,
    input  wire [3*C_IN-1:0]     mem_q,

    // patch of channel ch
    input  wire [CH_W-1:0]       ch,
    output wire [8:0]            patch,
    output wire [8:0]            mask
);

reg [2:0]          row_in;
reg                col_in;
reg [3*ADDR_W-1:0] addr_r;

// the bounds arithmetic is done on integers: image row/column -1 is legal here
integer r, y, x;
// only the low ADDR_W bits of the address integer are used, by design
/* verilator lint_off UNUSEDSIGNAL */
integer a;
/* verilator lint_on UNUSEDSIGNAL */

always @* begin
    x = {{(32-X_W){1'b0}}, ix} + {30'd0, fetch_col} - 1;
    col_in = (x >= 0) && (x < W);
    for (r = 0; r < 3; r = r + 1) begin
        y = {{(32-Y_W){1'b0}}, iy} + r - 1;
        row_in[r] = (y >= 0) && (y < H);
        // any legal address where the tap is outside; the mask zeroes it
        a = (row_in[r] && col_in) ? y * W + x : 0;
        addr_r[r*ADDR_W +: ADDR_W] = a[ADDR_W-1:0];
    end
end

assign mem_addr = addr_r;

// capture stage, aligned with the memory latency
reg        cap_v;
reg [1:0]  cap_col;
reg [2:0]  cap_in;

reg [9*C_IN-1:0] win;
reg [8:0]        mask_reg;

integer rr;

always @(posedge clk) begin
    cap_v <= fetch_v;
    cap_col <= fetch_col;
    cap_in <= row_in & {3{col_in}};
    if (cap_v) begin
        for (rr = 0; rr < 3; rr = rr + 1) begin
            win[(3*rr + {30'd0, cap_col})*C_IN +: C_IN] <= mem_q[rr*C_IN +: C_IN];
            mask_reg[3*rr + {30'd0, cap_col}] <= cap_in[rr];
        end
    end
    if (rst) begin
        cap_v <= 1'b0;
        cap_col <= 2'd0;
        cap_in <= 3'd0;
        win <= {9*C_IN{1'b0}};
        mask_reg <= 9'd0;
    end
end

genvar j;
generate
    for (j = 0; j < 9; j = j + 1) begin : tap
        assign patch[j] = win[j*C_IN + {{(32-CH_W){1'b0}}, ch}];
    end
endgenerate

assign mask = mask_reg;

endmodule

`default_nettype wire
