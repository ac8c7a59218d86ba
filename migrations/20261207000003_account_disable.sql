-- An admin can disable an account: its sessions end, its API tokens are refused, its queued
-- jobs are not dispatched, and it cannot sign in, until an admin enables it again. Null: enabled.
alter table users add column disabled_at bigint;
