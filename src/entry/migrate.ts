import { run } from '../actions/migrate.js';

void run();
