// A second agent process on an instance's agent directory that runs one `database restore` (the test kills
// it with -9 mid-way, as the agent's process would die). Usage: node restore-child.js AGENT_DIR JSON_REQUEST
import { Agent } from '../../src/agent/agent.js';
import type { DatabaseRestoreRequest } from '../../src/agent/protocol.js';

const [agentDir, request] = process.argv.slice(2);
const agent = await Agent.open(agentDir!, { log: (l) => process.stderr.write(`${l}\n`) });
const res = await agent.restoreDatabase(JSON.parse(request!) as DatabaseRestoreRequest);
process.stdout.write(`${JSON.stringify(res)}\n`);
