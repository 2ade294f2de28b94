# One test host, root over SSH with the bench's key and the host's known key;
# SSHKit keeps one connection to it for the whole run.
server ENV.fetch("CAP_HOST"), port: Integer(ENV.fetch("CAP_PORT")), user: "root", roles: %w[app db web]

set :ssh_options, {
  keys: [ENV.fetch("CAP_KEY")],
  keys_only: true,
  auth_methods: %w[publickey],
  user_known_hosts_file: ENV.fetch("CAP_KNOWN_HOSTS"),
  global_known_hosts_file: "/dev/null",
  verify_host_key: :always,
  config: false,
}
