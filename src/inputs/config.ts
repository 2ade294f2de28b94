// The inputs that choose the config file and its section: every action has them.

import { checkRelativePath, custom, pattern, type Field } from './fields.js';

export const CONFIG_FILE_DEFAULT = '.metalship.yml';

export const configInputs = {
  config: custom<string>(
    {
      description:
        'The config file: shared settings and per-environment sections, with the same names and values as these inputs (see the README, "Config file"). ' +
        'Relative to the workspace. Left out: .metalship.yml, if there is one; given: the file must exist. An input given here overrides the file.',
      default: CONFIG_FILE_DEFAULT,
      notInConfig: 'it names the config file itself',
    },
    {
      expected:
        'a path of letters, digits and ._/@+-, relative to the workspace or absolute, e.g. deploy/metalship.yml',
    },
    (v) => {
      const bad = checkRelativePath(v.startsWith('/') ? v.slice(1) : v);
      return bad ? { error: bad } : v;
    },
  ),
  environment: pattern({
    description:
      "The environment deployed to, e.g. production: the config file's section of that name (under environments:) overrides its shared settings, and deploy and rollback record their GitHub deployment in it. Names are compared ignoring case, as GitHub's environments are. " +
      "Left out: no section, and the deployment goes to the environment of the deployment event that started the workflow, else production. Give the job's `environment:` name to keep both on one page.",
    default: '',
    notInConfig: 'it chooses the section of the file',
    regex: /^(|(?=.{1,255}$)[A-Za-z0-9._/-]+( [A-Za-z0-9._/-]+)*)$/,
    expected: 'an environment name of letters, digits, ._/- and single spaces (at most 255), e.g. production',
  }),
} satisfies Record<string, Field>;
