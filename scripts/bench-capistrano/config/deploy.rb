# A Capistrano 3 deploy of a Python web service as such deploys are usually
# written: a git repository, a shared virtualenv, pip after the code is in
# place, migrations every deploy, a systemd restart of the api, worker and
# scheduler after the symlink switch.
# The bench passes the host and the app through CAP_* variables.
lock "~> 3.17"

set :application, ENV.fetch("CAP_UNIT")
# The test hosts cannot reach the internet: the bench pushes to a bare
# repository on the host (standing for GitHub) and Capistrano clones it there.
set :repo_url, ENV.fetch("CAP_REPO")
set :branch, "main"
set :deploy_to, ENV.fetch("CAP_DEPLOY_TO")
set :keep_releases, 5
append :linked_files, ".env"
append :linked_dirs, "log"
set :venv, -> { shared_path.join("venv") }
set :format_options, color: false, truncate: false

namespace :python do
  desc "Create the shared virtualenv once (the first deploy)"
  task :venv do
    on roles(:app) do
      unless test("[ -x #{fetch(:venv)}/bin/python ]")
        execute :python3, "-m", "venv", "--system-site-packages", fetch(:venv)
      end
    end
  end

  desc "Install the requirements into the virtualenv (no PyPI here: --no-index, the system site packages)"
  task :requirements do
    on roles(:app) do
      within release_path do
        execute "#{fetch(:venv)}/bin/pip", "install", "-q", "--no-index", "-r", "requirements.txt"
      end
    end
  end

  desc "Apply the migrations (alembic upgrade head) as the app user"
  task :migrate do
    next unless ENV["CAP_MIGRATE"] == "1"
    on roles(:db) do
      within release_path do
        execute :runuser, "-u", "www-data", "--", "env", "DATABASE_URL=#{ENV.fetch("CAP_DATABASE_URL")}",
                "#{fetch(:venv)}/bin/python", "-m", "dbmigrate", "upgrade", "head"
      end
    end
  end
end

namespace :deploy do
  desc "Restart the app's units: the api, its worker and its scheduler"
  task :restart do
    on roles(:app) do
      app = fetch(:application)
      execute :systemctl, "restart", app, "#{app}-worker", "#{app}-scheduler"
    end
  end
  after :updated, "python:venv"
  after :updated, "python:requirements"
  after :updated, "python:migrate"
  # Also after a rollback's publishing: deploy:rollback restarts too.
  after :publishing, :restart
end
