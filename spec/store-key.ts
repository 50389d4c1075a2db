// A store key or prefix as specs accept it: the characters our keys use, nothing that could climb
// out of a prefix or need escaping. The store itself validates every key again (infra/keys.ts).

import { z } from 'zod';

export const StoreKeySchema = z.string().regex(/^[A-Za-z0-9._\-/=+]+$/, 'a store key: letters, digits and . _ - / = +');
