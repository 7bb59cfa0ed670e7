Rails.application.routes.draw do
  # The load balancer's and imagectl-agent's health check.
  get "/up", to: "health#show"
  root to: "health#show"
end
