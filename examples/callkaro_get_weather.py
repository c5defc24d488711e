async def get_weather(
    ctx: RunContext,
    location: str,
    days: int = 1
) -> dict:
    """
    Get weather forecast for a location.
    
    Args:
        ctx: RunContext object
        location: City name or coordinates
        days: Number of days for forecast (1-7)
        
    Returns:
        dict: {
            status: "success" | "error",
            location: str,
            forecast: list[dict]
        }
    """
    # Input validation
    if not location or not isinstance(location, str):
        return {
            "status": "error",
            "message": "Location is required"
        }
        
    if not 1 <= days <= 7:
        return {
            "status": "error",
            "message": "Days must be between 1 and 7"
        }
    
    try:
        # Make API call with timeout
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.get(
                "https://api.weatherapi.com/v1/forecast.json",
                params={
                    "key": "YOUR_API_KEY",
                    "q": location,
                    "days": days
                }
            )
            
            if response.status_code != 200:
                return {
                    "status": "error",
                    "message": f"Weather API error: {response.status_code}"
                }
                
            data = response.json()
            
            return {
                "status": "success",
                "location": data["location"]["name"],
                "forecast": [
                    {
                        "date": day["date"],
                        "condition": day["day"]["condition"]["text"],
                        "max_temp": day["day"]["maxtemp_c"]
                    }
                    for day in data["forecast"]["forecastday"]
                ]
            }
            
    except httpx.RequestError as e:
        logger.error(f"Weather API request failed: {e}")
        return {
            "status": "error",
            "message": "Failed to fetch weather data"
        }
