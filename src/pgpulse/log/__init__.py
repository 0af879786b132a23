"""The log side: positions (cursor), reading and pruning the change log, and the
one listener connection per process that follows it."""
