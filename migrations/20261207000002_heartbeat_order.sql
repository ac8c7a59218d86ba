-- The sender's clock on the latest heartbeat accepted from a node. A heartbeat that is not newer
-- is refused, also after a server restart, so a captured one cannot be replayed to fake an agent
-- restart (which moves the node's jobs away).
alter table nodes add column last_sent_at bigint;
