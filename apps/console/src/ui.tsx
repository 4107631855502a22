import type { ComponentChildren } from 'preact';
import type { SessionStatus } from '@mgx/client';

export function StatusBadge({ status }: { status: SessionStatus }) {
  return (
    <span class={`badge status-${status}`} data-status={status}>
      {status}
    </span>
  );
}

export function ErrorBox({ error }: { error: string | undefined }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}

export function Section({ title, children }: { title: string; children: ComponentChildren }) {
  return (
    <section class="card">
      <h2>{title}</h2>
      {children}
    </section>
  );
}
