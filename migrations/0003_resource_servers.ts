import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // APIs (OAuth resource servers, RFC 8707): a client names one with `resource` and gets a token whose
  // audience is that API, limited to the API's scopes.
  await db.schema
    .createTable('resource_servers')
    .addColumn('identifier', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('access_token_format', 'text', (c) => c.notNull().check(sql`access_token_format in ('jwt', 'opaque')`))
    .addColumn('signing_alg', 'text', (c) => c.notNull().check(sql`signing_alg in ('RS256', 'ES256')`))
    .addColumn('access_token_ttl', 'integer', (c) => c.notNull().check(sql`access_token_ttl between 60 and 86400`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // Which clients may obtain tokens for an API, and with which of its scopes (Auth0's "client grants").
  await db.schema
    .createTable('client_api_access')
    .addColumn('client_id', 'text', (c) => c.notNull().references('clients.client_id').onDelete('cascade'))
    .addColumn('resource_server', 'text', (c) => c.notNull().references('resource_servers.identifier').onDelete('cascade'))
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('client_api_access_pk', ['client_id', 'resource_server'])
    .execute();
  await db.schema.createIndex('client_api_access_resource_idx').on('client_api_access').column('resource_server').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('client_api_access').execute();
  await db.schema.dropTable('resource_servers').execute();
}
