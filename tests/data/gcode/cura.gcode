;FLAVOR:Marlin
;TIME:3723
;Filament used: 1.23456m
;Layer height: 0.2
;MINX:95.2
;MINY:95.2
;MINZ:0.2
;MAXX:124.8
;MAXY:124.8
;MAXZ:0.6
;TARGET_MACHINE.NAME:Creality Ender-3
;Generated with Cura_SteamEngine 5.6.0
M140 S60
M105
M190 S60
M104 S200
M105
M109 S200
M82 ;absolute extrusion mode
; Ender 3 Custom Start G-code
G92 E0 ; Reset Extruder
G28 ; Home all axes
G1 Z2.0 F3000 ; Move Z Axis up little to prevent scratching of Heat Bed
G1 X0.1 Y20 Z0.3 F5000.0 ; Move to start position
G1 X0.1 Y200.0 Z0.3 F1500.0 E15 ; Draw the first line
G92 E0 ; Reset Extruder
G1 Z2.0 F3000 ; Move Z Axis up little to prevent scratching of Heat Bed
G92 E0
G92 E0
G1 F2700 E-5
;LAYER_COUNT:3
;LAYER:0
M107
;MESH:calibration_cube.stl
G0 F6000 X96.1 Y96.1 Z0.2
;TYPE:WALL-OUTER
G1 F2700 E0
G1 F1200 X123.9 Y96.1 E0.92483
G1 X123.9 Y123.9 E1.84966
G1 X96.1 Y123.9 E2.77449
G1 X96.1 Y96.1 E3.69932
;MESH:keychain.stl
G0 F6000 X60.0 Y60.0
;TYPE:WALL-OUTER
G1 F1200 X70.0 Y60.0 E4.03201
;MESH:NONMESH
G0 F6000 X96.5 Y96.5
;TIME_ELAPSED:1240.5
;LAYER:1
M106 S85
;MESH:calibration_cube.stl
G0 F6000 X96.1 Y96.1 Z0.4
;TYPE:WALL-OUTER
G1 F1800 X123.9 Y96.1 E4.9
;MESH:keychain.stl
G1 X70.0 Y60.0 E5.1
;MESH:NONMESH
;TIME_ELAPSED:2480.9
;LAYER:2
;MESH:calibration_cube.stl
G0 F6000 X96.1 Y96.1 Z0.6
G1 F1800 X123.9 Y96.1 E6.2
;TIME_ELAPSED:3723.0
G1 F2700 E3.2
M140 S0
M107
G91 ;Relative positioning
G1 E-2 F2700 ;Retract a bit
G90 ;Absolute positioning
M84 X Y E ;Disable all steppers but Z
M82 ;absolute extrusion mode
M104 S0
;End of Gcode
;SETTING_3 {"global_quality": "[general]\\nversion = 4\\nname = Standard Quality
;SETTING_3  #2\\ndefinition = creality_ender3\\n\\n[metadata]\\ntype = quality_ch
;SETTING_3 anges\\nquality_type = standard\\nsetting_version = 22\\n\\n[values]\\n
;SETTING_3 adhesion_type = skirt\\nlayer_height = 0.2\\n\\n"}
