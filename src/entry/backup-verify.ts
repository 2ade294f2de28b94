import { run } from '../actions/backup-verify.js';

void run();
