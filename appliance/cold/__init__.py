"""The cold side: everything that happens to rows after the hot side made them.

``rows``: the shared-memory row rings the capture publishes into and consumers read at their own pace.
``output``: the output process, the first consumer, which writes the table files.
"""
