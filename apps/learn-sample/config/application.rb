require_relative "boot"

require "rails"
require "action_controller/railtie"

Bundler.require(*Rails.groups)

module Learn
  class Application < Rails::Application
    config.load_defaults 6.1
    config.eager_load = Rails.env.production?
    config.cache_classes = Rails.env.production?
    # Logs go to the journal through stdout; the image ships them on.
    config.logger = ActiveSupport::Logger.new($stdout)
    config.log_level = :info
    # Instances are reached through nginx and the load balancer.
    config.hosts.clear
    config.secret_key_base = ENV.fetch("SECRET_KEY_BASE")
  end
end
