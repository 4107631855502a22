import { createContext } from 'preact';
import { useContext } from 'preact/hooks';
import type { MgxClient } from '@mgx/client';

export interface Auth {
  token: string;
  client: MgxClient;
  signOut: () => void;
}

export const AuthContext = createContext<Auth | null>(null);

/** The signed-in caller; every page below the sign-in has one. */
export function useAuth(): Auth {
  const auth = useContext(AuthContext);
  if (!auth) throw new Error('useAuth outside a signed-in page');
  return auth;
}
