-- Several server processes on one database (issue: outgrow one server).
--
-- The work that must happen once (dispatch, the dead-node sweep, roll-ups, schedules) runs on
-- the holder of a lease. The holder proves it is alive by raising `beat`; a replica that sees
-- neither term nor beat move for the lease's time takes it over and raises `term`. Writes the
-- holder makes check the term in their own transaction, so a holder that lost the lease while
-- it stalled changes nothing when it wakes. No clocks are compared across machines: each
-- replica times the beats it sees by its own clock.
create table leases (
    name       text primary key,
    -- The replica holding it; empty once its holder let it go (a successor may take it at once).
    holder     text not null,
    term       bigint not null,
    beat       bigint not null,
    -- The holder's clock at its latest beat; shown by `server status`, never compared.
    renewed_at bigint not null
);

-- The server processes on this database, as each last reported itself (for `server status`,
-- and so a replica knows whether others need to hear its events).
create table replicas (
    id         text primary key,
    host       text not null,
    pid        bigint not null,
    version    text not null,
    address    text not null,
    started_at bigint not null,
    seen_at    bigint not null
);

-- One row: this deployment's identity. Every replica on this database claims the broker
-- namespace with it, so a second deployment sharing the namespace is refused at start.
create table deployment (
    id         text primary key,
    created_at bigint not null
);
