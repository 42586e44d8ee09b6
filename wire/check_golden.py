#!/usr/bin/env python3
"""Independent check of PROTOCOL.md's golden vectors: a bit-by-bit CRC32C and the
byte table's offsets, written without any of verity-wire's code. Run by .ci/run."""
import hashlib
import hmac
import re
import sys
from pathlib import Path


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283
text = (Path(__file__).parent / "PROTOCOL.md").read_text()
vectors = re.findall(r"#### `([^`]+)`\n\n```hex\n(.*?)```", text, re.S)
if not vectors:
    sys.exit("no golden vectors found in PROTOCOL.md")
for name, hexs in vectors:
    b = bytes.fromhex(hexs.replace("\n", " "))
    le = lambda lo, hi: int.from_bytes(b[lo:hi], "little")
    frame_len = le(4, 8)
    assert len(b) == (frame_len + 7) // 8 * 8, f"{name}: stride"
    assert b[8:10] == b"VY", f"{name}: magic"
    assert b[10] == 1, f"{name}: version"
    assert 1 <= b[11] <= 7, f"{name}: kind"
    assert le(14, 16) == 0, f"{name}: reserved"
    assert all(x == 0 for x in b[frame_len:]), f"{name}: padding"
    assert le(0, 4) == crc32c(b[4:]), f"{name}: crc32c"
macs = re.findall(r"```mac\n([0-9a-f]{64})\n```", text)
if len(macs) != 1:
    sys.exit("PROTOCOL.md must hold exactly one golden MAC")
msg = (b"verity-hello-v1\0" + (7).to_bytes(8, "little") + (2).to_bytes(4, "little")
       + (1).to_bytes(2, "little") + bytes([1]) + bytes(range(32)) + bytes(range(32, 64)))
mac = hmac.new(b"verity-test-secret-0001", msg, hashlib.sha256).hexdigest()
assert mac == macs[0], f"golden MAC: {mac} != {macs[0]}"
print(f"golden vectors: {len(vectors)} frames and 1 MAC checked independently")
