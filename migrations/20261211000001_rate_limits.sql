-- Rate limits shared by every server process on this database (issue: outgrow one server).
--
-- One GCRA bucket per key ("login-ip:203.0.113.7", ...): `tat` is the theoretical arrival
-- time, in ms since the epoch, of the next attempt the bucket would take without waiting.
-- An attempt is one upsert that moves `tat` on when the bucket has room and records in
-- `allowed` whether it did, so replicas counting the same key never double-spend it.
-- Rows whose `tat` has passed are full buckets again and are pruned.
create table rate_buckets (
    key     text primary key,
    tat     bigint not null,
    allowed bigint not null
);

-- Addresses an account signed in from: attempts from them are not held to the account's
-- ceiling across all addresses, so a botnet cannot lock an owner out. Forgotten after a while.
create table known_sign_ins (
    account text not null,
    address text not null,
    seen_at bigint not null,
    primary key (account, address)
);
