// The Docker Engine API client (dockerode), from a docker_host: unix:///path/docker.sock or
// tcp://host:port (default DOCKER_HOST, else the local daemon's socket).
import Docker from 'dockerode';

export function connectDocker(dockerHost?: string): Docker {
  const where = dockerHost ?? process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
  const u = new URL(where);
  if (u.protocol === 'unix:') return new Docker({ socketPath: decodeURIComponent(u.pathname) });
  if (u.protocol === 'tcp:' || u.protocol === 'http:') return new Docker({ host: u.hostname, port: Number(u.port || 2375), protocol: 'http' });
  if (u.protocol === 'https:') return new Docker({ host: u.hostname, port: Number(u.port || 2376), protocol: 'https' });
  throw new Error(`docker_host: expected unix:///path/to/docker.sock or tcp://host:port, got ${JSON.stringify(where)}`);
}

interface ProgressEvent {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

/** Waits for a build or pull stream to end; an error event rejects (dockerode reports those as data). */
export function followProgress(docker: Docker, stream: NodeJS.ReadableStream, onLine?: (line: string) => void): Promise<ProgressEvent[]> {
  return new Promise((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null, out: ProgressEvent[]) => {
        if (err) return reject(err);
        const bad = out.find((e) => e.error || e.errorDetail);
        if (bad) return reject(new Error(bad.errorDetail?.message ?? bad.error ?? 'failed'));
        resolve(out);
      },
      (e: ProgressEvent) => {
        const line = (e.stream ?? e.status ?? '').trimEnd();
        if (line && onLine) onLine(line);
      },
    );
  });
}
