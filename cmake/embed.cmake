# embed.cmake: writes a file's bytes as a C array (cmake -DIN=... -DOUT=... -DNAME=... -P embed.cmake),
# so the dashboard page ships inside the binary with no external assets.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," arr "${hex}")
file(WRITE ${OUT} "/* generated from ${IN} by cmake/embed.cmake */\n#include <stddef.h>\nextern const unsigned char ${NAME}[];\nextern const size_t ${NAME}_len;\nconst unsigned char ${NAME}[] = {${arr} 0};\nconst size_t ${NAME}_len = sizeof ${NAME} - 1;\n")
