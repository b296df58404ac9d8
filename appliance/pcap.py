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

TCPDUMP_MAGIC = 0xA1B2C3D4            # microsecond timestamps
NSEC_TCPDUMP_MAGIC = 0xA1B23C4D       # nanosecond timestamps
PCAP_VERSION_MAJOR, PCAP_VERSION_MINOR = 2, 4
PCAP_FILE_HEADER = 24
PCAP_RECORD_HEADER = 16
PCAP_SNAPLEN_OFFSET = 16              # where snaplen sits in the file header
PCAP_LINKTYPE_OFFSET = 20
LINKTYPE_ETHERNET = 1
MAX_SNAPLEN = 262144                  # libpcap's MAXIMUM_SNAPLEN

# pcapng block types and the section header's byte-order magic
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_EPB_HEAD, PCAPNG_SPB_HEAD, PCAPNG_BLOCK_TAIL = 28, 12, 4
OPT_ENDOFOPT, SHB_USERAPPL, IF_NAME, IF_TSRESOL = 0, 4, 2, 9

# The first four bytes of a file as they appear on disk -> (big-endian, nanosecond)
PCAP_MAGIC_BYTES = {
    TCPDUMP_MAGIC.to_bytes(4, "little"): (False, False), TCPDUMP_MAGIC.to_bytes(4, "big"): (True, False),
    NSEC_TCPDUMP_MAGIC.to_bytes(4, "little"): (False, True), NSEC_TCPDUMP_MAGIC.to_bytes(4, "big"): (True, True),
}
PCAPNG_MAGIC_BYTES = PCAPNG_SHB.to_bytes(4, "little")    # a palindrome: the same in either byte order
