/**
 * The one place that loads @peculiar/x509. Every module, test included, imports the library from
 * here so that its run-time requirements are met before its first use.
 *
 * @peculiar/x509 2.x looks up its algorithm classes through tsyringe, which throws at load time
 * unless a Reflect metadata polyfill is installed first (see the library's README). The library
 * also needs a WebCrypto implementation, and sealmesh gives it the one built into Node.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

export { x509 };

/** Node's WebCrypto implementation, the provider for every key that sealmesh keeps in process. */
export const nodeCrypto: webcrypto.Crypto = webcrypto;

x509.cryptoProvider.set(nodeCrypto);
