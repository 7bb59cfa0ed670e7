# A job that proves the worker runs jobs: it logs a line.
class HeartbeatWorker
  include Sidekiq::Worker

  def perform(from)
    Sidekiq.logger.info("heartbeat from #{from}")
  end
end
