import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // A user who signs in with an email or SMS code may set up an authenticator app in the same
  // sign-in: they ask for it (enrol_after_factor), pass their code, and only then see the QR code
  // (factor_passed records which code they passed in this interaction).
  await db.schema
    .alterTable('interaction_progress')
    .addColumn('enrol_after_factor', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('factor_passed', 'text')
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('interaction_progress').dropColumn('enrol_after_factor').dropColumn('factor_passed').execute();
}
