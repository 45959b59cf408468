# Turns a text file IN into a C file OUT defining `const char lw_boot_py[]` (hex bytes, NUL-ended).
file(READ ${IN} _hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," _bytes "${_hex}")
file(WRITE ${OUT} "/* Generated from boot.py; do not edit. */\nextern const char lw_boot_py[];\nconst char lw_boot_py[] = {${_bytes} 0x00};\n")
