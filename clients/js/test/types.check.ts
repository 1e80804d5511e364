// Holds the shipped, hand-written ../switchboard.d.ts against the declarations
// tsc emits from the SDK's code (../.types/switchboard.d.ts, from the JSDoc in
// ../switchboard.js). Nothing here is meant to run: it compiles (every constant is `true`), or `npm run typecheck`
// fails and names what differs.

import type * as Impl from "../.types/switchboard.js";
import type * as Decl from "../switchboard.js";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** `true` when A and B are the same type; else what differs, shown in the error. */
type Same<A, B> = Equal<A, B> extends true ? true : { code: A; types: B };

// The same values are exported (classes, functions, constants).
export const Exports: Same<keyof typeof Impl, keyof typeof Decl> = true;

// Public members the code has but the types leave out on purpose (used by the
// SDK itself), and members the types declare that the code sets dynamically.
type Internal = { MeshPeer: "receive" };
type Dynamic = { SwitchboardError: "rid" | "room" };

type Members<C extends keyof typeof Impl & keyof typeof Decl> =
  typeof Impl[C] extends abstract new (...args: any) => infer I ? I : never;
type DeclMembers<C extends keyof typeof Impl & keyof typeof Decl> =
  typeof Decl[C] extends abstract new (...args: any) => infer I ? I : never;
type Omitted<C> = C extends keyof Internal ? Internal[C] : never;
type Extra<C> = C extends keyof Dynamic ? Dynamic[C] : never;

/** Names of the public members on each side, less the allowed differences. */
type MemberNames<C extends "SwitchboardClient" | "PeerMesh" | "MeshPeer" | "SwitchboardError"> = Same<
  Exclude<keyof Members<C>, Omitted<C>>,
  Exclude<keyof DeclMembers<C>, Extra<C>>
>;
export const ClientMembers: MemberNames<"SwitchboardClient"> = true;
export const MeshMembers: MemberNames<"PeerMesh"> = true;
export const MeshPeerMembers: MemberNames<"MeshPeer"> = true;
export const ErrorMembers: MemberNames<"SwitchboardError"> = true;

/** `any` (from JSDoc-less code) says nothing either way. */
type IsAny<T> = 0 extends 1 & T ? true : false;

/** How many parameters a function takes, optional ones included. */
type Arity<F> = F extends (...args: infer P) => any ? Required<P>["length"] : never;

/** Methods whose parameter counts differ between code and types. */
type ArityMismatch<A, B> = {
  [K in keyof A & keyof B]: IsAny<A[K]> extends true
    ? never
    : A[K] extends (...args: any) => any
    ? Equal<Arity<A[K]>, Arity<B[K]>> extends true
      ? never
      : K
    : never;
}[keyof A & keyof B];
export const ClientArity: Same<ArityMismatch<Members<"SwitchboardClient">, DeclMembers<"SwitchboardClient">>, never> = true;
export const MeshArity: Same<ArityMismatch<Members<"PeerMesh">, DeclMembers<"PeerMesh">>, never> = true;
export const MeshPeerArity: Same<ArityMismatch<Members<"MeshPeer">, DeclMembers<"MeshPeer">>, never> = true;
export const FunctionArity: Same<ArityMismatch<typeof Impl, typeof Decl>, never> = true;

/** Members whose type in the code is not assignable to the declared one. */
type Incompatible<A, B> = {
  [K in keyof A & keyof B]: IsAny<A[K]> extends true ? never : A[K] extends B[K] ? never : K;
}[keyof A & keyof B];
export const Functions: Same<
  Incompatible<
    Pick<typeof Impl, "backoffDelay" | "signalingUrl" | "isPolite">,
    Pick<typeof Decl, "backoffDelay" | "signalingUrl" | "isPolite">
  >,
  never
> = true;
export const ClientTypes: Same<Incompatible<Members<"SwitchboardClient">, DeclMembers<"SwitchboardClient">>, never> = true;
export const MeshTypes: Same<Incompatible<Members<"PeerMesh">, DeclMembers<"PeerMesh">>, never> = true;

type Ctor<C> = C extends abstract new (...args: infer P) => any ? Required<P>["length"] : never;
export const Constructors: Same<
  [Ctor<typeof Impl.SwitchboardClient>, Ctor<typeof Impl.PeerMesh>, Ctor<typeof Impl.SwitchboardError>],
  [Ctor<typeof Decl.SwitchboardClient>, Ctor<typeof Decl.PeerMesh>, Ctor<typeof Decl.SwitchboardError>]
> = true;

// The code's lists are exactly the declared unions (and the Rust lists are
// exactly the code's: test/protocol-lists.test.mjs).
export const RelayTypes: Same<(typeof Impl.RELAY_TYPES)[number], Decl.RelayType> = true;
export const ServerCodes: Same<(typeof Impl.ERROR_CODES)[number], Decl.ServerErrorCode> = true;
export const ClientCodes: Same<(typeof Impl.CLIENT_ERROR_CODES)[number], Decl.ClientErrorCode> = true;

