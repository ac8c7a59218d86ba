-- API tokens may expire: past `expires_at` (ms) a token is refused like a revoked one. Null:
-- it lasts until it is revoked.
alter table api_tokens add column expires_at bigint;
