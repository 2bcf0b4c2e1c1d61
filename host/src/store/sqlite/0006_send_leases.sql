-- Which process sends through a rate-limited connection (the lane's
-- lease): one at a time, so the connection's limits hold for every process
-- sharing the store. A lease is taken over once `until_ms` has passed.
CREATE TABLE send_leases (
    connection TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms INTEGER NOT NULL
) STRICT;
