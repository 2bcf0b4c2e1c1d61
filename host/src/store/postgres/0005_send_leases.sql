-- Which process sends through a rate-limited connection (the lane's send
-- lease): one at a time, so the connection's limits hold for every replica.
-- A lease is taken over once `until_ms` has passed.
CREATE TABLE send_leases (
    connection TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
