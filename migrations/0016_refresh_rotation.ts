import { sql, type Kysely } from 'kysely';

/**
 * A refresh token's rotation as one database call. The used token names its successor, so whether
 * a presented token was already rotated never depends on clocks; the grant's row is locked first, so
 * rotations within one grant take turns (and cannot deadlock one another).
 *
 * Outcomes: 'rotated' (the used token is consumed and its successor stored); 'reused' (the token
 * was rotated before and this is no retry of a lost answer: every token of the grant and the grant
 * itself are deleted); 'gone' (the token or its grant no longer exists: nothing is stored).
 *
 * Within `reuse_seconds` of the first rotation a retry is allowed (the client's answer was lost) as
 * long as the earlier successor was never used: it replaces that successor, which is marked used, so
 * a token has at most one live successor however often it is presented, and whoever presents the
 * replaced one later (only a second holder of the token could have it) revokes the grant.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table oidc_models add column successor text`.execute(db);
  await sql`create function rotate_refresh_token(
      used_id text, reuse_seconds float8,
      next_id text, next_payload jsonb, next_grant text, next_user_code text, next_uid text, next_expires timestamptz)
    returns text language plpgsql as $$
    declare
      used record;
      earlier_used boolean;
    begin
      perform 1 from oidc_models g where g.model = 'Grant' and g.id = next_grant for update;
      if not found then
        return 'gone';
      end if;
      select t.consumed_at, t.successor into used
        from oidc_models t where t.model = 'RefreshToken' and t.id = used_id and t.grant_id = next_grant for update;
      if not found then
        return 'gone';
      end if;
      if used.consumed_at is not null then
        select s.consumed_at is not null into earlier_used
          from oidc_models s where s.model = 'RefreshToken' and s.id = used.successor;
        if used.successor is null or earlier_used
           or used.consumed_at <= clock_timestamp() - make_interval(secs => reuse_seconds) then
          delete from oidc_models o where o.grant_id = next_grant or (o.model = 'Grant' and o.id = next_grant);
          return 'reused';
        end if;
        update oidc_models s set consumed_at = now() where s.model = 'RefreshToken' and s.id = used.successor;
      end if;
      update oidc_models t set consumed_at = coalesce(t.consumed_at, now()), successor = next_id
        where t.model = 'RefreshToken' and t.id = used_id;
      insert into oidc_models (model, id, payload, grant_id, user_code, uid, expires_at)
        values ('RefreshToken', next_id, next_payload, next_grant, next_user_code, next_uid, next_expires)
        on conflict (model, id) do update set payload = excluded.payload, grant_id = excluded.grant_id,
          user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at;
      return 'rotated';
    end $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function rotate_refresh_token`.execute(db);
  await sql`alter table oidc_models drop column successor`.execute(db);
}
