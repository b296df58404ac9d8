"""The capture file formats' constants, in one place: classic pcap and pcapng.

Every reader and writer of these files takes its numbers from here: the replay's input detection
(``replay/inputs.py``) and walkers (``decode/walk.py``), the generator (``gen/capture.py``), the live recorder
(``capture/record.py``) and the ring kernels that write record headers (``ring/deliver.py``).  Names follow
libpcap's ``pcap/pcap.h`` and the pcapng draft (draft-ietf-opsawg-pcapng).

classic pcap, file header (24 bytes)::

    u32 magic; u16 version_major (2); u16 version_minor (4); i32 thiszone; u32 sigfigs; u32 snaplen;
    u32 linktype (low 16 bits: LINKTYPE_*, upper bits: FCS flags)

then per frame a record header (16 bytes)::

    u32 ts_sec; u32 ts_usec (or ts_nsec with the nanosecond magic); u32 caplen; u32 len
"""

import struct

TCPDUMP_MAGIC = 0xA1B2C3D4            # microsecond timestamps
NSEC_TCPDUMP_MAGIC = 0xA1B23C4D       # nanosecond timestamps
PCAP_VERSION_MAJOR, PCAP_VERSION_MINOR = 2, 4
LINKTYPE_ETHERNET = 1
MAX_SNAPLEN = 262144                  # libpcap's MAXIMUM_SNAPLEN

# The two classic headers as tables (name, struct format), in the file's byte order.
PCAP_FILE_HEADER_FIELDS = (("magic", "I"), ("version_major", "H"), ("version_minor", "H"), ("thiszone", "i"),
                           ("sigfigs", "I"), ("snaplen", "I"), ("linktype", "I"))
PCAP_RECORD_HEADER_FIELDS = (("ts_sec", "I"), ("ts_frac", "I"), ("incl_len", "I"), ("orig_len", "I"))


def _offsets(fields) -> dict[str, int]:
    return {name: struct.calcsize("<" + "".join(fmt for _, fmt in fields[:i])) for i, (name, _) in enumerate(fields)}


PCAP_FILE_HEADER = struct.calcsize("<" + "".join(fmt for _, fmt in PCAP_FILE_HEADER_FIELDS))        # 24
PCAP_RECORD_HEADER = struct.calcsize("<" + "".join(fmt for _, fmt in PCAP_RECORD_HEADER_FIELDS))    # 16
PCAP_SNAPLEN_OFFSET = _offsets(PCAP_FILE_HEADER_FIELDS)["snaplen"]          # 16
PCAP_LINKTYPE_OFFSET = _offsets(PCAP_FILE_HEADER_FIELDS)["linktype"]        # 20
_REC = _offsets(PCAP_RECORD_HEADER_FIELDS)
PCAP_TS_SEC_AT, PCAP_TS_FRAC_AT, PCAP_INCL_LEN_AT, PCAP_ORIG_LEN_AT = (_REC[n] for n, _ in PCAP_RECORD_HEADER_FIELDS)

# pcapng block types and the section header's byte-order magic
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_BYTE_ORDER_MAGIC_SWAPPED = 0x4D3C2B1A          # the magic of the other byte order, read little-endian
PCAPNG_EPB_HEAD, PCAPNG_SPB_HEAD, PCAPNG_BLOCK_TAIL = 28, 12, 4
PCAPNG_BLOCK_MIN = 12                 # block_type, block_total_length, ..., block_total_length
PCAPNG_IDB_HEAD = 16                  # options start here
OPT_ENDOFOPT, SHB_USERAPPL, IF_NAME, IF_TSRESOL = 0, 4, 2, 9

# Field offsets inside a block (from its first byte; every block starts with u32 block_type, u32 block_total_length)::
#
#   SHB: u32 byte_order_magic @8; u16 major, minor; i64 section_length
#   IDB: u16 linktype @8; u16 reserved; u32 snaplen @12; options @16
#   EPB: u32 interface_id @8; u32 timestamp_high @12, timestamp_low @16; u32 captured_len @20, original_len @24;
#        packet data @28
#   SPB: u32 original_len @8; packet data @12
PCAPNG_TOTAL_LENGTH_AT = 4
SHB_BYTE_ORDER_MAGIC_AT = 8
IDB_LINKTYPE_AT, IDB_SNAPLEN_AT = 8, 12
EPB_INTERFACE_ID_AT, EPB_TS_HIGH_AT, EPB_TS_LOW_AT, EPB_CAPTURED_LEN_AT, EPB_ORIGINAL_LEN_AT = 8, 12, 16, 20, 24
SPB_ORIGINAL_LEN_AT = 8

# The first four bytes of a file as they appear on disk -> (big-endian, nanosecond)
PCAP_MAGIC_BYTES = {
    TCPDUMP_MAGIC.to_bytes(4, "little"): (False, False), TCPDUMP_MAGIC.to_bytes(4, "big"): (True, False),
    NSEC_TCPDUMP_MAGIC.to_bytes(4, "little"): (False, True), NSEC_TCPDUMP_MAGIC.to_bytes(4, "big"): (True, True),
}
PCAPNG_MAGIC_BYTES = PCAPNG_SHB.to_bytes(4, "little")    # a palindrome: the same in either byte order
