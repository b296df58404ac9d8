"""Named slots of the one int64 counter array the kernels increment.

Kernels cannot build dicts, so every event worth reporting is a slot in ``cnt``; ``NAMES`` turns the array into
the summary's keys.  Slots marked (gauge) hold a value rather than a count.
"""
FRAMES = 0               # link-layer records read
UNSUPPORTED_LINKTYPE = 1  # records of a link type other than Ethernet
TRUNCATED_FRAMES = 2     # captured bytes shorter than the headers say
NON_IPV4 = 3
BAD_IP = 4
IP_FRAGMENTS = 5
NON_UDP = 6
BAD_UDP = 7
NOT_FEED = 8             # UDP not addressed to a selected (group, port)
LINES_OVERFLOW = 9       # feed datagrams dropped because the line table is full (auto mode)
PACKETS = 10             # MoldUDP64 packets handed to the session layer
BAD_PACKETS = 11
BAD_SHORT = 12           # payload shorter than the 20-byte header
BAD_FRAMING = 13         # a block runs past the end, or count disagrees with the bytes
BAD_LENGTH = 14          # a block's length does not match its ITCH type (includes zero-length blocks)
BAD_TYPE = 15            # unknown ITCH message type
BAD_SEQUENCE = 16        # sequence number beyond 2**62 (cannot be real)
DUPLICATE_PACKETS = 17
HEARTBEATS = 18
END_OF_SESSION = 19
SESSIONS_OVERFLOW = 20   # packets of a session beyond the session table's capacity
PENDING_FORCED = 21      # holes declared early because the pending table or a slot was full
MESSAGES = 22            # ITCH messages applied
BAD_MESSAGES = 23        # day-file records with a bad length or type
TRUNCATED_RECORDS = 24   # a file record that runs past the end of the input
UNKNOWN_ORDER_REFS = 25
REJECTED_ADDS = 26
ORDER_TABLE_FULL = 27    # adds refused because the order table reached its capacity
LEVEL_POOL_FULL = 28     # price levels that could not be created: that book is incomplete
LEVEL_MISSING = 29       # an order's level was absent (only after LEVEL_POOL_FULL)
BROKEN_TRADES = 30
OPEN_ORDERS = 31         # (gauge) live orders
MAX_TIMESTAMP = 32       # (gauge) largest ITCH timestamp applied
FIRST_FRAME_NS = 33      # (gauge) capture time of the first feed frame, ns since the epoch
LAST_FRAME_NS = 34       # (gauge)
PENDING = 35             # (gauge) packets held waiting for another line to fill a hole
VWAP_LATE_TRADES = 36    # trades older than windows already emitted (timestamps went backwards)
EMPTY_RECORDS = 37       # zero-length day-file records (padding some tools write); also in BAD_MESSAGES
FRAMING_LOST = 38        # day-file length prefixes found damaged: the walker resynchronised after each
RESYNC_SKIPPED_BYTES = 39  # day-file bytes passed over while resynchronising
SIZE = 40

NAMES = {
    FRAMES: "frames", UNSUPPORTED_LINKTYPE: "unsupported_linktype", TRUNCATED_FRAMES: "truncated_frames",
    NON_IPV4: "non_ipv4", BAD_IP: "bad_ip", IP_FRAGMENTS: "ip_fragments", NON_UDP: "non_udp",
    BAD_UDP: "bad_udp", NOT_FEED: "not_feed", LINES_OVERFLOW: "lines_overflow", PACKETS: "packets",
    BAD_PACKETS: "bad_packets", BAD_SHORT: "bad_short", BAD_FRAMING: "bad_framing", BAD_LENGTH: "bad_length",
    BAD_TYPE: "bad_type", BAD_SEQUENCE: "bad_sequence", DUPLICATE_PACKETS: "duplicate_packets",
    HEARTBEATS: "heartbeats", END_OF_SESSION: "end_of_session_packets", SESSIONS_OVERFLOW: "sessions_overflow",
    PENDING_FORCED: "pending_forced", MESSAGES: "messages", BAD_MESSAGES: "bad_messages",
    TRUNCATED_RECORDS: "truncated_records", UNKNOWN_ORDER_REFS: "unknown_order_refs",
    REJECTED_ADDS: "rejected_adds", ORDER_TABLE_FULL: "order_table_full", LEVEL_POOL_FULL: "level_pool_full",
    LEVEL_MISSING: "level_missing", BROKEN_TRADES: "broken_trades", OPEN_ORDERS: "open_orders",
    MAX_TIMESTAMP: "max_timestamp_ns", FIRST_FRAME_NS: "first_frame_ns", LAST_FRAME_NS: "last_frame_ns",
    PENDING: "pending_packets", VWAP_LATE_TRADES: "vwap_late_trades",
    EMPTY_RECORDS: "empty_records", FRAMING_LOST: "framing_lost", RESYNC_SKIPPED_BYTES: "resync_skipped_bytes",
}
