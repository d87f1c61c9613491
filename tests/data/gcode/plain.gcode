; Bed corner check, written by hand.
; Moves to each corner at paper height so the knobs can be adjusted.

G28 ; home everything
G90
M117 Corner 1
G1 Z5 F600
G1 X30 Y30 F3000
G1 Z0.1 F300
M0 Adjust corner 1   ; wait for the button

   ; a comment indented with spaces
	G1 Z5 F600
N10 G1 X200 Y30 F3000*97
N11 G1 Z0.1 F300*35
N12 *44
N13 ; numbered line holding only a comment
M0 Adjust corner 2
G1 Z5 F600
G1 X200 Y200 F3000
G1 Z0.1 F300
M0 Adjust corner 3
G1 Z10 F600
M84 ; motors off, no newline at the end of this line