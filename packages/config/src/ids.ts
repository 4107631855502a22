/** Strict pattern for ids the platform turns into names and paths (no dots, no slashes). */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
