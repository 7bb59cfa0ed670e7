class HealthController < ActionController::API
  def show
    render plain: "ok\n"
  end
end
