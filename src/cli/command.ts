// Declarative commands: a command names the catalogue options it takes; this file turns them into
// commander flags, reads environment fallbacks, validates, and hands the handler typed values.
import { Command, Option } from 'commander';
import { catalogue, UsageError, type Catalogue, type OptionSpec } from '../config/catalogue.js';

export type OptionName = keyof Catalogue;
type ValueOf<N extends OptionName> = ReturnType<Catalogue[N]['parse']>;

export interface CommandSpec<R extends OptionName, O extends OptionName> {
  /** Words after `couchtrove`, e.g. ['agent', 'backup']. */
  path: string[];
  summary: string;
  required: readonly R[];
  optional: readonly O[];
  /**
   * An option that may also be given as the one positional argument (`instance show NAME|ID`), as the
   * openstack and trove clients take it; the flag keeps working.
   */
  positional?: R | O;
  /**
   * What an option means for this command when the catalogue's words are too general (`--name` names an
   * instance here, a backup there), and a parser for this command (a backup given by name through the API).
   */
  specialise?: { [K in R | O]?: Specialised };
  /** Other flags this command accepts for an option, not shown in help or docs (a spelling another verb uses). */
  aliases?: Record<string, R | O>;
  /** Returns the process exit code. */
  run: (values: { [K in R]: ValueOf<K> } & { [K in O]?: ValueOf<K> }, io: CommandIO) => Promise<number>;
}

export interface CommandIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
}

// Type-erased form kept in the registry.
export interface AnyCommand {
  path: string[];
  summary: string;
  required: readonly OptionName[];
  optional: readonly OptionName[];
  positional?: OptionName;
  specialise?: { [K in OptionName]?: Specialised };
  aliases?: Record<string, OptionName>;
  run: (values: Record<string, unknown>, io: CommandIO) => Promise<number>;
}

export interface Specialised {
  description?: string;
  parse?: (raw: string, flag: string) => unknown;
}

/** An option as one command sees it: the catalogue's entry with the command's own words and parser. */
export function optionOf(cmd: AnyCommand, name: OptionName): OptionSpec<unknown> {
  const spec = catalogue[name] as OptionSpec<unknown>;
  const own = cmd.specialise?.[name];
  return own ? { ...spec, ...own } : spec;
}

export function defineCommand<R extends OptionName = never, O extends OptionName = never>(spec: CommandSpec<R, O>): AnyCommand {
  return spec as unknown as AnyCommand;
}

function flagText(spec: OptionSpec<unknown>): string {
  return spec.arg ? `--${spec.flag} <${spec.arg.toLowerCase()}>` : `--${spec.flag}`;
}

/** Builds the commander tree for the given commands. */
export function buildProgram(commands: AnyCommand[], io: CommandIO, onResult: (code: number) => void, version?: string): Command {
  const program = new Command('couchtrove')
    .description('couchtrove: run and protect Apache CouchDB')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .showHelpAfterError(false);
  if (version !== undefined) program.version(version, '-V, --version', 'Print the version of couchtrove');
  const groups = new Map<string, Command>();
  for (const cmd of commands) {
    let parent = program;
    for (let i = 0; i < cmd.path.length - 1; i++) {
      const key = cmd.path.slice(0, i + 1).join(' ');
      let g = groups.get(key);
      if (!g) {
        g = parent.command(cmd.path[i]!).description(`${cmd.path[i]} commands`);
        g.exitOverride();
        groups.set(key, g);
      }
      parent = g;
    }
    const sub = parent.command(cmd.path[cmd.path.length - 1]!).description(cmd.summary).exitOverride();
    const names = [...cmd.required, ...cmd.optional];
    const pos = cmd.positional === undefined ? undefined : optionOf(cmd, cmd.positional);
    if (pos) sub.argument(`[${pos.arg === 'ID' ? 'NAME|ID' : (pos.arg ?? 'VALUE')}]`, `${pos.description} (or --${pos.flag})`);
    for (const name of names) {
      const spec = optionOf(cmd, name);
      const opt = new Option(flagText(spec), spec.description + (cmd.required.includes(name) ? (name === cmd.positional ? ' (required, as this flag or the argument)' : ' (required)') : ''));
      if (spec.default !== undefined) opt.default(spec.default);
      if (spec.env) opt.env(spec.env);
      sub.addOption(opt);
    }
    for (const [alias, name] of Object.entries(cmd.aliases ?? {})) {
      const spec = optionOf(cmd, name);
      sub.addOption(new Option(spec.arg ? `--${alias} <${spec.arg.toLowerCase()}>` : `--${alias}`).hideHelp());
    }
    sub.action(async (...args: unknown[]) => {
      // commander passes the declared arguments first, then the options.
      const raw = (pos ? args[1] : args[0]) as Record<string, unknown>;
      if (pos && typeof args[0] === 'string') {
        const key = camel(pos.flag);
        const flagged = raw[key];
        if (flagged !== undefined && flagged !== args[0]) throw new UsageError(`give the ${pos.flag} once: ${JSON.stringify(args[0])} and --${pos.flag} ${JSON.stringify(flagged)} differ`);
        raw[key] = args[0];
      }
      for (const [alias, name] of Object.entries(cmd.aliases ?? {})) {
        const given = raw[camel(alias)];
        if (given === undefined) continue;
        const key = camel(optionOf(cmd, name).flag);
        if (raw[key] !== undefined && raw[key] !== given) throw new UsageError(`--${alias} is --${optionOf(cmd, name).flag}: give it once`);
        raw[key] = given;
      }
      const values: Record<string, unknown> = {};
      for (const name of names) {
        const spec = optionOf(cmd, name);
        const key = camel(spec.flag);
        const v = raw[key];
        if (v === undefined || v === false) {
          if (cmd.required.includes(name)) throw new UsageError(`missing required option --${spec.flag}${name === cmd.positional ? ` (or give it as the argument)` : ''}`);
          continue;
        }
        values[name] = spec.arg ? spec.parse(String(v), spec.flag) : true;
      }
      onResult(await cmd.run(values, io));
    });
  }
  return program;
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Resolves at the first SIGTERM or SIGINT: long-running commands stop cleanly on either. */
export function untilStopSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
